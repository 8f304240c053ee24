"""Random neurons: the controls every effect of domain-specific neurons is compared with.

One maker, :func:`random_neurons`, draws a given number of neurons uniformly from candidates;
the random baseline of a mask, the random masks of ``bench`` and the random controls of
``neurons ablate`` are all built from it, so they draw alike for a seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.models.components import ComponentInfo


def random_neurons(
    candidates: torch.Tensor, count: int, generator: torch.Generator
) -> torch.Tensor:
    """``count`` of the ``True`` entries of ``candidates`` (any shape), chosen uniformly:
    a bool tensor of the same shape. One ``torch.randperm`` over the candidates."""
    pool = candidates.flatten().nonzero().flatten()
    if count > len(pool):
        raise MMNeuronError(f"cannot draw {count} neurons from {len(pool)} candidates")
    out = torch.zeros(candidates.numel(), dtype=torch.bool)
    out[pool[torch.randperm(len(pool), generator=generator)[:count]]] = True
    return out.view(candidates.shape)


def select_random_like(mask: NeuronMask, seed: int, together: Sequence[str] = ()) -> NeuronMask:
    """A control mask: per domain, component and layer, as many neurons as `mask`, uniformly.

    Domains named in ``together`` (a task's '+'-joined domains, switched off at once) share
    one draw with as many neurons per component and layer as the union of theirs, so that
    switching them off together removes as many random neurons as mask neurons.
    Deterministic for a seed (one `torch.Generator`, fixed iteration order).
    """
    unknown = sorted(set(together) - set(mask.domains))
    if unknown:
        raise MMNeuronError(f"domain {unknown[0]!r} is not in the mask ({', '.join(mask.domains)})")
    group = [d for d in mask.domains if d in set(together)]
    generator = torch.Generator().manual_seed(seed)
    masks = {}
    for d in mask.domains:
        if d in group[1:]:
            continue  # drawn with the group's first domain
        domains = group if d in group else [d]
        for c in mask.components:
            like = torch.stack([mask.masks[(g, c)] for g in domains]).any(0)
            out = torch.zeros_like(like)
            for layer, count in enumerate(like.sum(1).tolist()):
                if count:
                    out[layer] = random_neurons(torch.ones_like(out[layer]), count, generator)
            masks.update({(g, c): out.clone() for g in domains})
    params = {"seed": seed, "like": {"method": mask.method, "params": mask.params}}
    if len(group) > 1:
        params["together"] = group
    return NeuronMask(
        domains=list(mask.domains),
        components=dict(mask.components),
        model=dict(mask.model),
        method="random",
        params=params,
        source=mask.source,
        masks=masks,
        unused=mask.unused,
    )


def random_mask(components: dict[str, ComponentInfo], rate: float, seed: int) -> NeuronMask:
    """One domain (``random``), ``round(rate * layers * width)`` (at least 1) neurons per
    component drawn over all its layers."""
    generator = torch.Generator().manual_seed(seed)
    masks = {}
    for name, info in components.items():
        candidates = torch.ones(info.layers, info.width, dtype=torch.bool)
        count = max(1, round(rate * candidates.numel()))
        masks[("random", name)] = random_neurons(candidates, count, generator)
    return NeuronMask(
        domains=["random"],
        components=dict(components),
        model={},
        method="random",
        params={"rate": rate, "seed": seed},
        source=None,
        masks=masks,
    )
