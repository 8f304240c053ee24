"""Deterministic samples of the synthetic domains: (domain, split, index) -> image, Q, A.

Each sample draws from its own RNG seeded by ``VERSION/domain/split/index``, so any sample
can be rebuilt alone, and train and eval samples never share a seed. The question type
cycles with the index and the answer cycles within each type, so every split is balanced:
without the image, no answer is better than a guess.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from types import ModuleType

from PIL import Image

from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.synthetic import common, documents, driving, medical, remote
from mmneuron_bench.synthetic.questions import Question

VERSION = "v1"
DOMAINS: dict[str, ModuleType] = {
    "common": common,
    "medical": medical,
    "driving": driving,
    "remote": remote,
    "documents": documents,
}
SPLIT_SIZES = {"train": 2400, "eval": 360}


@dataclass(frozen=True)
class SyntheticSample:
    domain: str
    split: str
    index: int
    question_type: int
    question: str
    answer: str
    image: Image.Image


def questions(domain: str) -> tuple[Question, ...]:
    """The question types of one domain."""
    return _domain(domain).QUESTIONS


def _domain(domain: str) -> ModuleType:
    if domain not in DOMAINS:
        raise MMNeuronError(f"unknown synthetic domain {domain!r} (known: {', '.join(DOMAINS)})")
    return DOMAINS[domain]


def _check_split(split: str, index: int) -> None:
    if split not in SPLIT_SIZES:
        raise MMNeuronError(f"unknown split {split!r} (known: {', '.join(SPLIT_SIZES)})")
    if not 0 <= index < SPLIT_SIZES[split]:
        raise MMNeuronError(
            f"index {index} is outside split {split!r} (0..{SPLIT_SIZES[split] - 1})"
        )


def question_and_answer(domain: str, index: int) -> tuple[int, str]:
    """The question type and answer of sample ``index``: both cycle, so splits are balanced."""
    qs = questions(domain)
    question_type = index % len(qs)
    answers = qs[question_type].answers
    return question_type, answers[(index // len(qs)) % len(answers)]


def generate(domain: str, split: str, index: int) -> SyntheticSample:
    """Sample ``index`` of ``split`` of ``domain``, identical on every call and machine."""
    module = _domain(domain)
    _check_split(split, index)
    question_type, answer = question_and_answer(domain, index)
    rng = random.Random(f"mmneuron-synth/{VERSION}/{domain}/{split}/{index}")
    image = module.draw(rng, question_type, answer)
    text = module.QUESTIONS[question_type].text
    return SyntheticSample(domain, split, index, question_type, text, answer, image)


def chance_level(domain: str, split: str = "eval") -> float:
    """Expected accuracy of answer-guessing without the image over the split's samples."""
    qs = questions(domain)
    n = SPLIT_SIZES[split]
    return sum(qs[question_and_answer(domain, i)[0]].chance for i in range(n)) / n
