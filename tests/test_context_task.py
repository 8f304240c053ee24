"""The context task: deterministic, balanced samples whose hint agrees with the image,
contradicts it, is irrelevant or stands alone, and lmms-eval tasks that score them."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from mmneuron_bench.domains.tasks import task_manager
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.synthetic.cache import CACHE_ENV
from mmneuron_bench.synthetic.context import (
    COLORS,
    CONDITIONS,
    QUESTION,
    SPLIT_SIZES,
    context_split_path,
    generate_context,
    load_context_split,
)
from mmneuron_bench.synthetic.mini_model import vocabulary


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(root))
        yield root


def _digest(split: str, index: int) -> str:
    s = generate_context(split, index)
    return hashlib.sha256(f"{s.prompt}|{s.answer}|".encode() + s.image.tobytes()).hexdigest()


def test_samples_are_deterministic_and_splits_disjoint():
    assert [_digest("eval", i) for i in range(6)] == [_digest("eval", i) for i in range(6)]
    eval_images = {generate_context("eval", i).image.tobytes() for i in range(100)}
    train_images = {generate_context("train", i).image.tobytes() for i in range(100)}
    dev_images = {generate_context("dev", i).image.tobytes() for i in range(100)}
    assert not eval_images & train_images and not eval_images & dev_images
    with pytest.raises(MMNeuronError, match="index 1000 is outside split 'eval'"):
        generate_context("eval", SPLIT_SIZES["eval"])


def test_conditions_say_what_they_promise():
    samples = [generate_context("eval", i) for i in range(200)]
    by = Counter(s.condition for s in samples)
    assert set(by) == set(CONDITIONS) and len(set(by.values())) == 1
    for s in samples:
        assert s.question == QUESTION and s.image.size == (32, 32)
        hinted = s.context.split()[3] if s.context else None  # "the object is C ."
        if s.condition == "none":
            assert s.prompt == QUESTION and s.answer == s.image_answer
        elif s.condition == "consistent":
            assert hinted == s.answer == s.image_answer
        elif s.condition == "conflict":
            assert hinted == s.answer != s.image_answer and s.image_answer in COLORS
        elif s.condition == "irrelevant":
            assert s.context.startswith("the object is on the ") and s.answer == s.image_answer
        else:
            assert hinted == s.answer and s.image_answer == ""
        if s.context:
            assert s.prompt == f"hint : {s.context} {QUESTION}"


def test_conflicts_cover_every_colour_pair_and_train_answers_half_by_the_hint():
    train = [generate_context("train", i) for i in range(SPLIT_SIZES["train"])]
    conflicts = [s for s in train if s.condition == "conflict"]
    pairs = Counter((s.image_answer, s.context.split()[3]) for s in conflicts)
    assert len(pairs) == 12 and max(pairs.values()) - min(pairs.values()) <= 2
    by_hint = Counter(
        (s.image_answer, s.context.split()[3]) for s in conflicts if s.answer != s.image_answer
    )
    assert all(abs(by_hint[p] - pairs[p] / 2) <= 1 for p in pairs)
    described = [s for s in train if s.condition == "describe"]
    assert all(
        s.question == "" and s.answer == f"the object is {s.image_answer} ." for s in described
    )
    words = set(vocabulary())
    assert all(
        set(s.prompt.split()) <= words and set(s.answer.split()) <= words for s in train[:60]
    )


def test_split_is_cached_on_first_use(cache_dir):
    data = load_context_split("dev")
    assert context_split_path("dev").exists() and len(data) == SPLIT_SIZES["dev"]
    row, sample = data[7], generate_context("dev", 7)
    assert (row["prompt"], row["answer"], row["image_answer"]) == (
        sample.prompt,
        sample.answer,
        sample.image_answer,
    )


def test_the_tasks_serve_one_condition_each(cache_dir):
    names = [f"mmneuron_synth_context_{c}_eval" for c in CONDITIONS]
    manager = task_manager(names, [], "llava_hf")
    loaded = manager.load_task_or_group(names)
    for condition, name in zip(CONDITIONS, names, strict=True):
        task = loaded[name]
        docs = list(task.test_docs())
        assert len(docs) == SPLIT_SIZES["eval"] // len(CONDITIONS)
        assert {d["condition"] for d in docs} == {condition}
        assert task.config.metadata["domain"] == "common"
        assert task.config.metadata["fastmem_context"] == "context"
        doc = docs[0]
        assert task.doc_to_text(doc) == doc["prompt"]
        scores = task.process_results(doc, [f" {doc['answer'].upper()}."])
        assert scores["exact_match"] == 1.0
        if condition == "conflict":
            assert scores["image_match"] == 0.0
            assert task.process_results(doc, [doc["image_answer"]])["image_match"] == 1.0
