"""DAPE selection: hand-worked cases, a slow reference implementation, masks built from stats."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.formats.stats import ActivationStats
from mmneuron_bench.models.components import ComponentInfo
from mmneuron_bench.selection.dape import dape_mask, entropy_over_domains, select_dape
from mmneuron_bench.selection.random import select_random_like

LN2 = math.log(2)


def domains_of(chosen: torch.Tensor) -> dict[tuple[int, int], list[int]]:
    """{(l, n): [domains]} for every neuron selected in at least one domain."""
    out: dict[tuple[int, int], list[int]] = {}
    for d, layer, n in chosen.nonzero().tolist():
        out.setdefault((layer, n), []).append(d)
    return out


def test_entropy_over_domains():
    p = torch.tensor([[1.0, 1.0, 0.0, 0.25], [1.0, 0.0, 0.0, 0.75]]).reshape(2, 1, 4)
    expected = [LN2, 0.0, 0.0, -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]
    assert entropy_over_domains(p.double())[0].tolist() == pytest.approx(expected, abs=1e-15)


# Two domains, 2 layers x 3 neurons. (p[0], p[1]) per neuron, H over domains:
#   flat 0 (l0 n0): (0.9, 0.0) H=0      flat 3 (l1 n0): (0.7, 0.0) H=0
#   flat 1 (l0 n1): (0.5, 0.5) H=ln2    flat 4 (l1 n1): (0.6, 0.0) H=0
#   flat 2 (l0 n2): (0.0, 0.8) H=0      flat 5 (l1 n2): (0.3, 0.3) H=ln2
# Sorted p: 0 0 0 0 .3 .3 .5 .5 .6 .7 .8 .9. filter_rate=bar_ratio=0.5: k=6, tau=bar=0.3, so
# flat 5 has no p > tau (H=+inf). Four neurons tie at H=0: smaller flat index wins.
HAND_P = torch.tensor(
    [[[0.9, 0.5, 0.0], [0.7, 0.6, 0.3]], [[0.0, 0.5, 0.8], [0.0, 0.0, 0.3]]], dtype=torch.float64
)


@pytest.mark.parametrize(
    ("top_rate", "expected"),
    [
        (1 / 3, {(0, 0): [0], (0, 2): [1]}),  # 2 of the four H=0 ties: flat 0 and 2
        (0.5, {(0, 0): [0], (0, 2): [1], (1, 0): [0]}),  # joint over layers: 2 in l0, 1 in l1
        # 5: all H=0 ties, then flat 1 (H=ln2) belongs to both domains (0.5 > bar in each)
        (5 / 6, {(0, 0): [0], (0, 1): [0, 1], (0, 2): [1], (1, 0): [0], (1, 1): [0]}),
        # 6 asked, 5 possible: flat 5 has no p > tau and is never selected
        (1.0, {(0, 0): [0], (0, 1): [0, 1], (0, 2): [1], (1, 0): [0], (1, 1): [0]}),
    ],
)
def test_hand_worked_selection(top_rate, expected):
    chosen = select_dape(HAND_P, top_rate=top_rate, filter_rate=0.5, bar_ratio=0.5)
    assert chosen.dtype == torch.bool and chosen.shape == (2, 2, 3)
    assert domains_of(chosen) == expected


def test_lowest_entropy_neuron_needs_a_value_above_tau():
    # n0 (0.1, 0) and n3 (0, 0.05) have H=0 but no value above tau; n1 (0.9, 0.8) is chosen.
    # Sorted p: 0 0 .05 .1 .2 .2 .8 .9; filter 0.75 -> k=6, tau=0.2; bar 0.875 -> k=7, bar=0.8.
    p = torch.tensor([[[0.1, 0.9, 0.2, 0.0]], [[0.0, 0.8, 0.2, 0.05]]], dtype=torch.float64)
    chosen = select_dape(p, top_rate=0.25, filter_rate=0.75, bar_ratio=0.875)
    assert domains_of(chosen) == {(0, 1): [0]}  # 0.8 is not > bar: domain 1 is left out


def test_all_zero_neurons_never_selected():
    # filter_rate=0 rounds to k=0, taken as k=1: tau = min(p) = 0, so zeros never pass.
    p = torch.tensor([[[0.0, 0.4, 0.0, 0.3]], [[0.0, 0.0, 0.2, 0.3]]], dtype=torch.float64)
    chosen = select_dape(p, top_rate=1.0, filter_rate=0.0, bar_ratio=0.0)
    assert domains_of(chosen) == {(0, 1): [0], (0, 2): [1], (0, 3): [0, 1]}
    assert not select_dape(torch.zeros(3, 2, 5, dtype=torch.float64), top_rate=1.0).any()


def test_multi_domain_assignment():
    # Three domains; neuron 0 is high in domains 0 and 2. Sorted p: 0 0 0 .1 .1 .1 .2 .7 .8;
    # filter/bar 5/9 -> k=5, tau=bar=0.1. Neuron 1 is 0.1 everywhere: no p > tau.
    p = torch.tensor([[[0.8, 0.1, 0.0]], [[0.0, 0.1, 0.2]], [[0.7, 0.1, 0.0]]], dtype=torch.float64)
    chosen = select_dape(p, top_rate=1.0, filter_rate=5 / 9, bar_ratio=5 / 9)
    assert domains_of(chosen) == {(0, 0): [0, 2], (0, 2): [1]}


@pytest.mark.parametrize(
    ("top_rate", "layers", "width", "count"),
    [(0.25, 2, 5, 2), (0.25, 2, 7, 4), (0.125, 4, 5, 2), (0.01, 10, 100, 10), (0.01, 7, 150, 10)],
)
def test_count_is_python_round_of_top_rate(top_rate, layers, width, count):
    # 2.5 -> 2 and 3.5 -> 4: Python's round, halves to even; 0.01 * 1050 is 10.5 -> 10
    # (0.01 * 7 * 150, multiplied left to right, is 10.500000000000002 and would give 11).
    g = torch.Generator().manual_seed(0)
    p = torch.rand(2, layers, width, generator=g, dtype=torch.float64) + 0.01
    chosen = select_dape(p, top_rate=top_rate, filter_rate=0.0, bar_ratio=0.0)
    assert count == round(top_rate * (layers * width))
    assert int(chosen.any(0).sum()) == count


def test_permuted_probabilities_tie_exactly_and_the_smaller_index_wins():
    # p of neurons 0..5 are the six orders of (2, 3, 9) / 340 over three domains: one entropy.
    orders = list(itertools.permutations([2.0, 3.0, 9.0]))[::-1]
    p = torch.tensor(orders, dtype=torch.float64).T.reshape(3, 1, 6) / 340
    h = entropy_over_domains(p)
    assert len(set(h.flatten().tolist())) == 1
    chosen = select_dape(p, top_rate=1 / 6, filter_rate=0.0, bar_ratio=0.0)
    assert chosen.any(0).flatten().nonzero().flatten().tolist() == [0]


@pytest.mark.parametrize(
    "kwargs", [{"top_rate": -0.1}, {"filter_rate": 1.5}, {"bar_ratio": float("nan")}]
)
def test_rates_outside_unit_interval_are_refused(kwargs):
    with pytest.raises(ValueError, match="must be in"):
        select_dape(torch.rand(2, 1, 4, dtype=torch.float64), **kwargs)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.5])
def test_invalid_probabilities_are_refused(bad):
    p = torch.rand(2, 1, 4, dtype=torch.float64)
    p[1, 0, 2] = bad
    with pytest.raises(ValueError, match="finite and >= 0"):
        select_dape(p)
    with pytest.raises(ValueError, match="shape"):
        select_dape(torch.rand(2, 4, dtype=torch.float64))


def reference_dape(
    p: torch.Tensor, top_rate: float, filter_rate: float, bar_ratio: float
) -> torch.Tensor:
    """DESIGN.md's DAPE in plain Python loops over neurons (k = 0 read as k = 1)."""
    n_domains, layers, width = p.shape
    values = p.tolist()
    ordered = sorted(v for plane in values for row in plane for v in row)

    def kth(rate: float) -> float:
        return ordered[max(round(rate * len(ordered)), 1) - 1]

    tau, bar = kth(filter_rate), kth(bar_ratio)
    candidates = []
    for layer in range(layers):
        for n in range(width):
            column = [values[d][layer][n] for d in range(n_domains)]
            if not any(v > tau for v in column):
                continue
            total = math.fsum(column)
            terms = [-(v / total) * math.log(v / total) for v in column if v > 0]
            candidates.append((math.fsum(terms), layer * width + n))
    candidates.sort()
    out = torch.zeros(n_domains, layers, width, dtype=torch.bool)
    for _, flat in candidates[: round(top_rate * (layers * width))]:
        layer, n = divmod(flat, width)
        for d in range(n_domains):
            out[d, layer, n] = values[d][layer][n] > bar
    return out


def random_p_with_ties(n_domains: int, layers: int, width: int, seed: int) -> torch.Tensor:
    """Random p with never-active neurons, exact duplicates, scaled copies and one-hot neurons.

    Duplicates and power-of-two scaled copies give bit-identical q, hence exactly tied H in any
    implementation; duplicates also tie p values at the thresholds.
    """
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n_domains, layers * width, generator=g, dtype=torch.float64)
    p[:, torch.randperm(p.shape[1], generator=g)[: p.shape[1] // 10]] *= 0.05  # weakly active
    idx = torch.randperm(p.shape[1], generator=g)
    part = max(p.shape[1] // 7, 1)
    block = [idx[i * part : (i + 1) * part] for i in range(6)]
    p[:, block[0]] = 0.0
    p[:, block[1]] = p[:, block[2]]
    p[:, block[3]] = p[:, block[4]] * 0.5
    keep = torch.randint(n_domains, (part,), generator=g)
    one_hot = torch.zeros(n_domains, part, dtype=torch.bool)
    one_hot[keep, torch.arange(part)] = True
    p[:, block[5]] = p[:, block[5]] * one_hot
    return p.reshape(n_domains, layers, width)


RATES = [
    (0.01, 0.95, 0.95),
    (0.1, 0.5, 0.8),
    (0.3, 0.9, 0.2),
    (0.5, 0.0, 0.0),
    (1.0, 0.3, 0.6),
    (0.25, 1.0, 1.0),
]


@pytest.mark.parametrize(
    ("shape", "seed"),
    [((2, 1, 7), 0), ((3, 2, 10), 1), ((5, 3, 40), 2), ((4, 4, 64), 3), ((5, 2, 300), 4)],
)
@pytest.mark.parametrize("rates", RATES)
def test_matches_reference_implementation(shape, seed, rates):
    p = random_p_with_ties(*shape, seed=seed)
    assert torch.equal(select_dape(p, *rates), reference_dape(p, *rates))


def test_matches_reference_with_heavy_ties():
    # Two domains, values on a coarse grid: many equal p values and many equal H values.
    g = torch.Generator().manual_seed(7)
    p = torch.randint(0, 5, (2, 3, 50), generator=g).double() / 4
    for rates in RATES:
        assert torch.equal(select_dape(p, *rates), reference_dape(p, *rates)), rates


COMPONENTS = {
    "vision": ComponentInfo("vision", "vision", 2, 30),
    "llm": ComponentInfo("llm", "llm", 3, 20),
}


def make_stats(seed: int = 0) -> ActivationStats:
    g = torch.Generator().manual_seed(seed)
    stats = ActivationStats.empty(
        ["a", "b", "c"], COMPONENTS, {"adapter": "t", "fingerprint": "f"}, "all"
    )
    for c in COMPONENTS:
        stats.tokens[c] += 100
        stats.active[c] = torch.randint(0, 101, stats.active[c].shape, generator=g)
    stats.tokens["llm"][2, 1] = 0  # a layer that saw no tokens of domain c
    return stats


def test_dape_mask_from_stats(tmp_path):
    stats = make_stats()
    mask = dape_mask(stats, top_rate=0.1, filter_rate=0.9, bar_ratio=0.8, source="ab" * 32)
    assert mask.method == "dape"
    assert mask.params == {"top_rate": 0.1, "filter_rate": 0.9, "activation_bar_ratio": 0.8}
    assert mask.source == "ab" * 32 and mask.domains == ["a", "b", "c"]
    for c in COMPONENTS:
        chosen = select_dape(stats.activation_probability(c), 0.1, 0.9, 0.8)
        for i, d in enumerate(stats.domains):
            assert torch.equal(mask.masks[(d, c)], chosen[i])
    mask.save(tmp_path / "m.mask.safetensors")  # per-domain views of one tensor save fine
    assert NeuronMask.load(tmp_path / "m.mask.safetensors").count() == mask.count()


def per_layer_counts(mask: NeuronMask) -> dict:
    return {key: m.sum(1).tolist() for key, m in mask.masks.items()}


def test_random_like_keeps_counts_and_is_seeded():
    mask = dape_mask(make_stats(), top_rate=0.2, filter_rate=0.5, bar_ratio=0.5)
    first = select_random_like(mask, seed=1)
    assert per_layer_counts(first) == per_layer_counts(mask)
    assert sum(mask.count().values()) > 0
    assert first.method == "random" and first.params["seed"] == 1
    assert first.params["like"] == {"method": "dape", "params": mask.params}
    again = select_random_like(mask, seed=1)
    other = select_random_like(mask, seed=2)
    assert all(torch.equal(first.masks[k], again.masks[k]) for k in mask.masks)
    assert any(not torch.equal(first.masks[k], other.masks[k]) for k in mask.masks)


def test_random_like_draws_joined_domains_once_with_their_union_count():
    base = dape_mask(make_stats(), top_rate=0.2, filter_rate=0.5, bar_ratio=0.5)
    masks = dict(base.masks)
    for c in base.components:  # b shares every neuron of a's first layer
        masks[("b", c)] = base.masks[("b", c)].clone()
        masks[("b", c)][0] |= base.masks[("a", c)][0]
    mask = NeuronMask(base.domains, base.components, base.model, "dape", {}, None, masks)
    joined = select_random_like(mask, seed=3, together=["b", "a"])
    assert joined.params["together"] == ["a", "b"]
    for c in mask.components:
        union = mask.masks[("a", c)] | mask.masks[("b", c)]
        assert torch.equal(joined.masks[("a", c)], joined.masks[("b", c)])
        assert joined.masks[("a", c)].sum(1).tolist() == union.sum(1).tolist()
        assert joined.masks[("c", c)].sum(1).tolist() == mask.masks[("c", c)].sum(1).tolist()
    # One domain "together" is the plain draw, so single-domain results do not move.
    plain, single = select_random_like(mask, 3), select_random_like(mask, 3, together=["b"])
    assert all(torch.equal(plain.masks[k], single.masks[k]) for k in mask.masks)
    assert "together" not in single.params
    with pytest.raises(MMNeuronError, match="domain 'z' is not in the mask"):
        select_random_like(mask, 3, together=["a", "z"])
