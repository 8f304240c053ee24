"""Paired bootstrap intervals and exact McNemar tests, on hand-computed cases."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from mmneuron_bench.analysis.uncertainty import change, mcnemar_exact, paired_bootstrap


@pytest.mark.parametrize(
    "b, c, expected",
    [
        (3, 0, 2 * 1 / 8),  # 2 * P[Bin(3, 1/2) <= 0]
        (5, 1, 2 * (1 + 6) / 64),  # 2 * (C(6,0) + C(6,1)) / 2^6
        (2, 2, 1.0),  # 2 * 11/16 capped at 1
        (0, 0, 1.0),  # no discordant document
        (10, 2, 2 * (1 + 12 + 66) / 4096),
    ],
)
def test_mcnemar_exact_by_hand_and_against_scipy(b, c, expected):
    # b documents right before and wrong after, c the other way, 4 concordant ones.
    base = [1] * b + [0] * c + [1, 1, 0, 0]
    other = [0] * b + [1] * c + [1, 1, 0, 0]
    assert mcnemar_exact(base, other) == pytest.approx(expected, rel=1e-12)
    if b + c:
        assert mcnemar_exact(base, other) == pytest.approx(binomtest(min(b, c), b + c).pvalue)


def test_bootstrap_of_a_constant_difference_is_that_difference():
    assert paired_bootstrap([0.2, 0.5, 0.9], [0.3, 0.6, 1.0]) == pytest.approx((0.1, 0.1, 0.1))


def test_bootstrap_of_two_documents_spans_every_resample_mean():
    # Differences (1, 0): resample means 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4, so the
    # 2.5 and 97.5 percentiles are 0 and 1.
    assert paired_bootstrap([0, 0], [1, 0]) == (0.5, 0.0, 1.0)


def test_bootstrap_is_seeded_and_paired():
    base = [1, 0, 1, 1, 0, 1, 0, 1, 1, 1] * 5
    other = [1, 0, 0, 1, 0, 1, 0, 0, 1, 1] * 5
    assert paired_bootstrap(base, other, seed=3) == paired_bootstrap(base, other, seed=3)
    value, low, high = paired_bootstrap(base, other)
    assert value == pytest.approx(-0.2) and low < value < high < 0
    # Pairing: the same scores shuffled apart would give a wider interval; paired, documents
    # that agree add no variance.
    assert high - low < 0.3


def test_change_marks_only_what_both_the_interval_and_the_exact_test_support():
    # 3 of 6 documents turn wrong: a resample without them has probability 1/64 < 2.5 %, so the
    # interval excludes 0, but the exact test gives p = 2 / 2^3 = 0.25.
    base, other = [1] * 6, [0, 0, 0, 1, 1, 1]
    few = change(base, other)
    assert few.excludes_zero and few.p_mcnemar == pytest.approx(0.25) and not few.significant
    many = change(base * 10, other * 10)
    assert many.excludes_zero and many.p_mcnemar < 1e-8 and many.significant
    graded = change([0.5, 0.25, 0.75], [0.25, 0.25, 0.5])
    assert graded.p_mcnemar is None and graded.documents == 3
