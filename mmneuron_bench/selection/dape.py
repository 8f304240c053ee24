"""DAPE (domain activation probability entropy) selection of domain-specific neurons.

Implements DESIGN.md "DAPE selection, exactly". Every `round` there is Python's built-in
`round` applied to the float product (`round(rate * count)`), i.e. halves go to the even
integer: `round(0.01 * 250) == 2`, `round(0.01 * 350) == 4`.
"""

from __future__ import annotations

import torch

from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.formats.stats import ActivationStats


def entropy_over_domains(p: torch.Tensor) -> torch.Tensor:
    """Entropy in nats over axis 0 of the L1-normalised `p` ([D, L, N] -> [L, N]).

    `q = p / p.sum(0)`, with `q = 0` where the sum is 0, and `0 log 0 = 0`: a neuron active in
    one domain only has entropy 0, one equally active everywhere has `log D`. The values are
    summed in sorted order, so neurons whose `p` are permutations of each other get the very
    same float (an exact tie, broken by index), not two values one rounding apart.
    """
    p = p.sort(0).values
    total = p.sum(0)
    q = (p / total).masked_fill_(total == 0, 0.0)
    return -q.xlogy_(q).sum(0)


def select_dape(
    p: torch.Tensor,
    top_rate: float = 0.01,
    filter_rate: float = 0.95,
    bar_ratio: float = 0.95,
) -> torch.Tensor:
    """Domain-specific neurons of one component: bool `[D, L, N]` from probabilities `p`.

    1. `H` = entropy of `p` over domains (`entropy_over_domains`).
    2. `tau` = k-th smallest of all `D*L*N` values of `p`, `k = round(filter_rate * D*L*N)`;
       a neuron with no `p > tau` gets `H = +inf`.
    3. The `round(top_rate * L*N)` neurons with the smallest `H` over the whole component are
       selected, ties going to the smaller flat index `l*N + n`; `H = +inf` is never selected.
    4. `bar` = k-th smallest of `p` with `k = round(bar_ratio * D*L*N)`; a selected neuron
       belongs to every domain `d` with `p[d, l, n] > bar`.

    `k = 0` (a rate so small that it rounds to 0) is taken as `k = 1`: the threshold is the
    smallest `p`, so a neuron still needs a value above the minimum and a never-active neuron
    is never selected.
    """
    if p.dim() != 3:
        raise ValueError(f"p must have shape [D, L, N], got {list(p.shape)}")
    for name, rate in (
        ("top_rate", top_rate),
        ("filter_rate", filter_rate),
        ("bar_ratio", bar_ratio),
    ):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {rate}")
    p = p.to(torch.float64)
    low, high = p.aminmax()  # NaN propagates into both
    if not (bool(low >= 0) and bool(torch.isfinite(high))):
        raise ValueError("p must be finite and >= 0")
    _, layers, width = p.shape
    flat_p = p.reshape(-1)
    tau = _kth_smallest(flat_p, filter_rate)
    bar = (
        tau
        if _k(bar_ratio, p.numel()) == _k(filter_rate, p.numel())
        else _kth_smallest(flat_p, bar_ratio)
    )

    # Entropy of the eligible neurons only (some p > tau); the others get +inf.
    by_neuron = p.reshape(p.shape[0], -1)
    eligible = (by_neuron > tau).any(0).nonzero().flatten()
    h = torch.full((layers * width,), float("inf"), dtype=torch.float64)
    h[eligible] = entropy_over_domains(by_neuron[:, eligible])
    chosen = _smallest(h, round(top_rate * (layers * width)))
    chosen = chosen.reshape(layers, width)
    return chosen & (p > bar)


def dape_mask(
    stats: ActivationStats,
    top_rate: float = 0.01,
    filter_rate: float = 0.95,
    bar_ratio: float = 0.95,
    source: str | None = None,
) -> NeuronMask:
    """Run DAPE on every component of `stats`; `source` is the stats file's sha256, if known.

    A domain that saw no tokens in a component is refused: its activation probabilities are
    all 0, and the selection would be the lowest-numbered neurons, not domain-specific ones.
    """
    for c in stats.components:
        for d, domain in enumerate(stats.domains):
            if not bool(stats.tokens[c][d].any()):
                raise MMNeuronError(
                    f"domain {domain!r} saw no tokens in component {c!r} "
                    f"({stats.samples[domain]} samples): nothing to select from; record it "
                    "again or leave it out"
                )
    masks = {}
    for c in stats.components:
        chosen = select_dape(stats.activation_probability(c), top_rate, filter_rate, bar_ratio)
        for i, d in enumerate(stats.domains):
            masks[(d, c)] = chosen[i]
    return NeuronMask(
        domains=list(stats.domains),
        components=dict(stats.components),
        model=dict(stats.model),
        method="dape",
        params={
            "top_rate": top_rate,
            "filter_rate": filter_rate,
            "activation_bar_ratio": bar_ratio,
        },
        source=source,
        masks=masks,
        unused=stats.unused,
    )


def _k(rate: float, n: int) -> int:
    """1-based rank `round(rate * n)`, at least 1 (see `select_dape`)."""
    return max(round(rate * n), 1)


def _kth_smallest(values: torch.Tensor, rate: float) -> torch.Tensor:
    return torch.kthvalue(values, _k(rate, values.numel())).values


def _smallest(h: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the `k` smallest finite values of 1-D `h`; ties go to smaller indices."""
    if k == 0:
        return torch.zeros_like(h, dtype=torch.bool)
    kth = torch.kthvalue(h, k).values
    chosen = h < kth
    if bool(torch.isfinite(kth)):
        ties = (h == kth).nonzero().flatten()[: k - int(chosen.sum())]
        chosen[ties] = True
    return chosen
