"""How many domain-specific neurons each layer of each component has, per domain (Figure 3)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.formats.outputs import file_reference, write_csv, write_json
from mmneuron_bench.models.components import ComponentInfo
from mmneuron_bench.tables import Table

FORMAT = "mmneuron-distribution/1"
CSV_HEADER = ("component", "role", "layer", "domain", "count")


@dataclass
class Distribution:
    """Per component, ``counts`` int64 ``[D, L]`` (neurons of domain d in layer l) and
    ``any_domain`` int64 ``[L]`` (neurons specific to at least one domain; a neuron may belong
    to several domains, so this can be less than the sum over domains)."""

    domains: list[str]
    components: dict[str, ComponentInfo]
    counts: dict[str, torch.Tensor]
    any_domain: dict[str, torch.Tensor]


def neuron_distribution(mask: NeuronMask) -> Distribution:
    """Count the mask's neurons per domain, component and layer."""
    counts, any_domain = {}, {}
    for c in mask.components:
        stacked = torch.stack([mask.masks[(d, c)] for d in mask.domains])  # [D, L, N]
        counts[c] = stacked.sum(-1)
        any_domain[c] = stacked.any(0).sum(-1)
    return Distribution(list(mask.domains), dict(mask.components), counts, any_domain)


def distribution_rows(dist: Distribution) -> list[tuple[str, str, int, str, int]]:
    """CSV rows ``(component, role, layer, domain, count)``, layer-major within a component."""
    return [
        (c, info.role, layer, d, int(dist.counts[c][i, layer]))
        for c, info in dist.components.items()
        for layer in range(info.layers)
        for i, d in enumerate(dist.domains)
    ]


def component_summary(dist: Distribution, unused: dict[str, list[int]] | None = None) -> dict:
    """Per component: role, layers, width, the counts per layer and in total, and (where the
    file says which layers the model never reads) the neurons selected in those layers."""
    components = {}
    for c, info in dist.components.items():
        counts = dist.counts[c]
        extra = {}
        if unused is not None:
            layers = unused.get(c, [])
            extra = {
                "unused_layers": layers,
                "any_domain_in_unused_layers": int(dist.any_domain[c][layers].sum()),
            }
        components[c] = {
            **extra,
            **info.to_meta(),
            "per_layer": {d: counts[i].tolist() for i, d in enumerate(dist.domains)},
            "total": {d: int(counts[i].sum()) for i, d in enumerate(dist.domains)},
            "any_domain_per_layer": dist.any_domain[c].tolist(),
            "any_domain_total": int(dist.any_domain[c].sum()),
        }
    return components


def distribution_json(dist: Distribution, mask: NeuronMask, mask_ref: dict) -> dict:
    """The content of ``distribution.json``."""
    return {
        "format": FORMAT,
        "mask": mask_ref,
        "model": mask.model,
        "method": mask.method,
        "domains": dist.domains,
        "components": component_summary(dist, mask.unused),
    }


def selection_table(caption: str, domains: list[str], components: dict) -> Table:
    """Selected neurons per domain (rows) and component (columns), then the neurons selected
    for any domain (a neuron may belong to several), how many of them sit in layers the model
    never reads (when known), and all neurons of the component.
    ``components`` as in :func:`component_summary`."""
    rows = [[d, *(str(c["total"][d]) for c in components.values())] for d in domains]
    rows.append(["any domain", *(str(c["any_domain_total"]) for c in components.values())])
    if any("any_domain_in_unused_layers" in c for c in components.values()):
        rows.append(
            [
                "in unused layers",
                *(str(c.get("any_domain_in_unused_layers", 0)) for c in components.values()),
            ]
        )
    rows.append(["neurons", *(str(c["layers"] * c["width"]) for c in components.values())])
    header = ["domain", *(f"{name} ({c['role']})" for name, c in components.items())]
    return Table(caption, header, rows)


def write_distribution(mask: NeuronMask, mask_path: Path, out_dir: Path) -> list[Path]:
    """Write ``distribution.csv``, ``distribution.json`` and one PNG per component."""
    from mmneuron_bench.analysis.plots import plot_distribution

    dist = neuron_distribution(mask)
    written = [out_dir / "distribution.csv", out_dir / "distribution.json"]
    write_csv(written[0], CSV_HEADER, distribution_rows(dist))
    write_json(written[1], distribution_json(dist, mask, file_reference(mask_path)))
    for c, info in dist.components.items():
        path = out_dir / f"distribution_{c}.png"
        plot_distribution(path, c, info.role, dist.domains, dist.counts[c])
        written.append(path)
    return written
