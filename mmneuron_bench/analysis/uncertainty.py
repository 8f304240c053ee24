"""How sure a change of accuracy is: paired bootstrap intervals and exact McNemar tests.

Both compare two evaluations of the same documents (one score per document, in the same
order): the change is ``mean(other) - mean(base)``; its 95 % interval resamples the documents
with replacement (the same resample for both, so the pairing is kept), from a seeded
generator so that a rerun gives the same interval. For scores that are all 0 or 1 (exact
match), McNemar's exact test counts the discordant documents: ``b`` right before and wrong
after, ``c`` wrong before and right after, and ``p = min(1, 2 * P[Binomial(b + c, 1/2) <=
min(b, c)])``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Change:
    """The change of the mean score from ``base`` to ``other`` with its uncertainty."""

    value: float
    low: float  # the interval's bounds (percentile bootstrap)
    high: float
    p_mcnemar: float | None  # None unless every score is 0 or 1
    documents: int

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely on one side of 0."""
        return self.low > 0 or self.high < 0

    @property
    def significant(self) -> bool:
        """Marked in tables: the interval excludes 0 and, for 0/1 scores, McNemar's p < 0.05 too
        (a percentile bootstrap is liberal on few documents: 3 of 6 documents all turning wrong
        give an interval without 0 but p = 0.25)."""
        exact = self.p_mcnemar is None or self.p_mcnemar < 1 - CONFIDENCE
        return self.excludes_zero and exact

    def to_json(self) -> dict:
        return {
            "value": self.value,
            "ci_low": self.low,
            "ci_high": self.high,
            "confidence": CONFIDENCE,
            "p_mcnemar": self.p_mcnemar,
            "documents": self.documents,
        }


def paired_bootstrap(
    base: Sequence[float],
    other: Sequence[float],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(change, low, high)``: the change of the mean and its percentile interval."""
    a, b = np.asarray(base, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError("paired scores need two equally long, non-empty sequences")
    differences = b - a
    generator = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):  # bounded memory: 1000 x documents at a time
        count = min(1000, resamples - start)
        picks = generator.integers(0, a.size, size=(count, a.size))
        means[start : start + count] = differences[picks].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(differences.mean()), float(low), float(high)


def mcnemar_exact(base: Sequence[float], other: Sequence[float]) -> float:
    """Two-sided exact McNemar p-value of paired 0/1 scores."""
    b = sum(1 for x, y in zip(base, other, strict=True) if x == 1 and y == 0)
    c = sum(1 for x, y in zip(base, other, strict=True) if x == 0 and y == 1)
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def change(base: Sequence[float], other: Sequence[float], seed: int = 0) -> Change:
    """The paired change from ``base`` to ``other`` with interval (and McNemar for 0/1)."""
    value, low, high = paired_bootstrap(base, other, seed=seed)
    binary = all(x in (0, 1) for x in (*base, *other))
    p = mcnemar_exact(base, other) if binary else None
    return Change(value, low, high, p, len(base))
