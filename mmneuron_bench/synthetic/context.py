"""The context task: colour questions whose prompt may carry a hint that contradicts the image.

A multimodal analogue of NQ-SWAP (a passage whose answer was swapped for another), for
testing interventions that make a model follow its context, such as FastMem. Each sample is a
``common``-domain scene with one large object (red, yellow, blue or white) and the question
``what color is the object ?``, in one of five conditions:

| condition | prompt (C: a colour) | image | answer |
|---|---|---|---|
| ``none`` | the question | the object | the image's colour |
| ``consistent`` | ``hint : the object is C .`` + question, C the image's | the object | C |
| ``conflict`` | the hint names another colour C | the object | C (``image_answer``: the image's) |
| ``irrelevant`` | ``hint : the object is on the left .`` + question | the object | the image's |
| ``hintonly`` | the hint + question | the scene without any object | C |

The hint's text without ``hint :`` is the sample's ``context``: what FastMem memorises.
Conditions cycle with the index, the image's colour cycles within a condition and a conflict's
hint colour runs through the three others, so every split is balanced (every ordered pair of
colours is equally frequent among conflicts).

The ``train`` split (used to train the miniature model) adds a sixth condition,
``describe``: no question, the image alone, and the answer ``the object is C .`` (so the model
can say what it sees in an assistant turn, the form FastMem memorises a text in). Its
conflicts are answered by the hint in half of them and by the image in the other half
(balanced per colour pair), so the trained model is torn between image and text where they
disagree, as real models are between their parametric knowledge and a swapped passage.
``dev`` and ``eval`` never appear in training; in both, a conflict's answer is the hint's.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.formats.atomic import atomic_write
from mmneuron_bench.synthetic import common
from mmneuron_bench.synthetic.drawing import finish
from mmneuron_bench.synthetic.generate import VERSION

if TYPE_CHECKING:
    import datasets

CONDITIONS = ("none", "consistent", "conflict", "irrelevant", "hintonly")
TRAIN_CONDITIONS = (*CONDITIONS, "describe")
SPLIT_SIZES = {"train": 2400, "dev": 500, "eval": 1000}
QUESTION = common.QUESTIONS[0].text  # "what color is the object ?"
COLORS = common.QUESTIONS[0].answers  # red, yellow, blue, white
SIDES = ("left", "right")
HINT = "hint :"


@dataclass(frozen=True)
class ContextSample:
    split: str
    index: int
    condition: str
    question: str  # the question alone ("" for describe)
    context: str  # the hint's text without "hint :" ("" when there is none)
    answer: str  # the reference answer
    image_answer: str  # the colour of the object drawn ("" when there is none)
    image: Image.Image

    @property
    def prompt(self) -> str:
        """The user text: the hint (if any), then the question."""
        return prompt_text(self.context, self.question)


def prompt_text(context: str, question: str) -> str:
    """``hint : CONTEXT QUESTION``, or the question alone when there is no context."""
    return f"{HINT} {context} {question}".strip() if context else question


def color_sentence(color: str) -> str:
    return f"the object is {color} ."


def words() -> set[str]:
    """Every word a context sample's prompt or answer can hold."""
    texts = [HINT, QUESTION, *(color_sentence(c) for c in COLORS)]
    texts += [f"the object is on the {side} ." for side in SIDES]
    return {word for text in texts for word in text.split()}


def conditions(split: str) -> tuple[str, ...]:
    return TRAIN_CONDITIONS if split == "train" else CONDITIONS


def _check(split: str, index: int) -> None:
    if split not in SPLIT_SIZES:
        raise MMNeuronError(f"unknown split {split!r} (known: {', '.join(SPLIT_SIZES)})")
    if not 0 <= index < SPLIT_SIZES[split]:
        raise MMNeuronError(
            f"index {index} is outside split {split!r} (0..{SPLIT_SIZES[split] - 1})"
        )


def generate_context(split: str, index: int) -> ContextSample:
    """Sample ``index`` of ``split`` of the context task, identical on every call and machine."""
    _check(split, index)
    names = conditions(split)
    condition, cycle = names[index % len(names)], index // len(names)
    rng = random.Random(f"mmneuron-synth/{VERSION}/context/{split}/{index}")
    color = COLORS[cycle % len(COLORS)]
    # Conflicts: the hint's colour is 1-3 steps on, so the 12 ordered pairs are balanced.
    other = COLORS[(cycle + 1 + (cycle // len(COLORS)) % 3) % len(COLORS)]
    question, context, answer, image_answer = QUESTION, "", color, color
    if condition == "consistent":
        context = color_sentence(color)
    elif condition == "conflict":
        context, answer = color_sentence(other), other
        # Train conflicts: the hint answers in half of each colour pair's, the image in half.
        if split == "train" and (cycle // 12) % 2 == 1:
            answer = color
    elif condition == "irrelevant":
        context = f"the object is on the {rng.choice(SIDES)} ."
    elif condition == "hintonly":
        context, image_answer = color_sentence(color), ""
    elif condition == "describe":
        question, answer = "", color_sentence(color)
    if condition == "hintonly":
        image, _draw, _horizon = common.scene(rng)
        image = finish(image, rng, noise=4.0)
    else:
        image = common.draw(rng, 0, color)
    return ContextSample(split, index, condition, question, context, answer, image_answer, image)


# The cache: like the domains' (mmneuron_bench.synthetic.cache), with the context columns.


def context_split_path(split: str) -> Path:
    from mmneuron_bench.synthetic.cache import cache_root

    return cache_root() / "synthetic" / VERSION / f"context_{split}.parquet"


COLUMNS = ("split", "index", "condition", "question", "context", "answer", "image_answer")


def _features() -> datasets.Features:
    from datasets import Features, Image, Value

    types = {name: Value("int64" if name == "index" else "string") for name in COLUMNS}
    return Features({**types, "prompt": Value("string"), "image": Image()})


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _write(split: str, path: Path) -> None:
    import pyarrow.parquet as pq
    from datasets import Dataset

    samples = [generate_context(split, i) for i in range(SPLIT_SIZES[split])]
    rows = {name: [getattr(s, name) for s in samples] for name in COLUMNS}
    rows["prompt"] = [s.prompt for s in samples]
    rows["image"] = [{"bytes": _png(s.image), "path": None} for s in samples]
    dataset = Dataset.from_dict(rows, features=_features())
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: pq.write_table(dataset.data.table, tmp))


def _is_current(dataset: datasets.Dataset, split: str) -> bool:
    if len(dataset) != SPLIT_SIZES[split] or list(dataset.column_names) != [
        *COLUMNS,
        "prompt",
        "image",
    ]:
        return False
    for index in (0, len(dataset) - 1):
        row, sample = dataset[index], generate_context(split, index)
        if (row["prompt"], row["answer"]) != (sample.prompt, sample.answer):
            return False
        if row["image"].convert("RGB").tobytes() != sample.image.convert("RGB").tobytes():
            return False
    return True


def load_context_split(split: str) -> datasets.Dataset:
    """Every sample of one split of the context task, generated into the cache on first use."""
    import pyarrow.parquet as pq
    from datasets import Dataset

    path = context_split_path(split)
    if path.exists():
        dataset = Dataset(pq.read_table(path))
        if _is_current(dataset, split):
            return dataset
    _write(split, path)
    return Dataset(pq.read_table(path))
