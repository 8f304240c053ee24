"""Random neuron masks over a checkpoint's components, for tests of what applies a mask."""

from __future__ import annotations

from pathlib import Path

import torch

from mmneuron_bench.formats.mask import NeuronMask


def write_random_mask(
    pretrained: str | Path,
    path: str | Path,
    fraction: float = 0.3,
    seed: int = 0,
    domains: tuple[str, ...] = ("common", "medical"),
) -> NeuronMask:
    """Save (and return) a mask of ``domains`` over every component of the model at
    ``pretrained``, each neuron in each with probability ``fraction``, made on that model
    (its identity from the config: no weights are loaded)."""
    from mmneuron_bench.models.identity import identity_of
    from mmneuron_bench.models.loading import resolve_components

    _, components = resolve_components(str(pretrained), None)
    infos = {c.name: c.info for c in components}
    generator = torch.Generator().manual_seed(seed)
    masks = {
        (d, c): torch.rand(i.layers, i.width, generator=generator) < fraction
        for d in domains
        for c, i in infos.items()
    }
    mask = NeuronMask(list(domains), infos, identity_of(str(pretrained)), "dape", {}, None, masks)
    mask.save(path)
    return mask
