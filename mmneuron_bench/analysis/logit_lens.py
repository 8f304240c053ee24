"""Logit lens (the paper's Figure 5): the entropy of the next-token distribution that the final
norm and the LM head give at every decoder layer, averaged over image and over text positions.

Memory: each decoder layer's output is turned into entropies inside its forward hook, a chunk
of positions at a time, so at most two ``chunk_size x vocab`` arrays exist at once (the logits
and the probabilities, float32), plus a ``layers x positions`` float64 table of entropies. The
prefill itself runs with ``logits_to_keep=1`` and no KV cache. So the lens adds memory that is
constant in the sequence length for the vocabulary part and linear (8 bytes per layer and
position) for the entropies, on top of the model's own prefill (linear in the sequence length,
plus quadratic attention scores under eager attention).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmneuron_bench.analysis.inputs import prefill, task_inputs
from mmneuron_bench.analysis.plots import plot_logit_lens
from mmneuron_bench.distributed import SINGLE, Processes
from mmneuron_bench.errors import AdapterError, MMNeuronError
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.formats.outputs import write_csv, write_json
from mmneuron_bench.interventions.mask import Deactivation
from mmneuron_bench.interventions.targets import check_module_set
from mmneuron_bench.models.adapter import IMAGE, TEXT, LanguageModelParts, LoadedModel
from mmneuron_bench.models.hooks import forward_hooks

FORMAT = "mmneuron-logit-lens/1"
KINDS = {"image": IMAGE, "text": TEXT}
DEFINITION = (
    "For decoder layer l (0-based) and position t of the language model's input, "
    "H = -sum_v p_v ln p_v in nats with p = softmax(lm_head(final_norm(h_l[t]))), followed by "
    "the model's own processing of the LM head's output where it has one (PaliGemma's logit "
    "soft-capping), where h_l is "
    "the output of decoder layer l in one prefill forward (the last layer's output is taken "
    "before the final norm, so its lens is the model's own next-token distribution). "
    "mean_entropy is the mean of H over all image positions, or all text positions (the "
    "adapter's token roles; padding excluded), of all samples of the task; 'masked' is the same "
    "with the task domain's neurons of the module set set to 0."
)
CSV_HEADER = ("task", "domain", "condition", "positions", "layer", "mean_entropy", "count")


def chunked_entropy(
    parts: LanguageModelParts, hidden: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """Lens entropy in nats of every position of ``hidden`` ``[..., d]`` -> float64 ``[...]``
    (computed in float32), ``chunk_size`` positions' full-vocabulary logits at a time."""
    flat = hidden.reshape(-1, hidden.shape[-1])
    out = torch.empty(flat.shape[0], dtype=torch.float64, device=flat.device)
    for start in range(0, flat.shape[0], chunk_size):
        logits = parts.logits(flat[start : start + chunk_size].unsqueeze(0))[0]
        probs = torch.softmax(logits.float(), dim=-1)
        # -p ln p in place (0 where p is 0): two chunk x vocab arrays at most, logits and probs.
        entropy = torch.special.entr(probs, out=probs).sum(-1)
        out[start : start + chunk_size] = entropy.to(out.device)
    return out.reshape(hidden.shape[:-1])


def lens_entropies(
    loaded: LoadedModel, inputs: dict[str, torch.Tensor], chunk_size: int = 256
) -> torch.Tensor:
    """Lens entropy at every decoder layer and position: float64 ``[layers, batch, seq]``."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    parts = loaded.adapter.language_model(loaded.model)
    found: list[list[torch.Tensor]] = [[] for _ in parts.layers]

    def hook(layer: int):
        def record(_module, _args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            found[layer].append(chunked_entropy(parts, hidden, chunk_size))

        return record

    with forward_hooks((layer, hook(i)) for i, layer in enumerate(parts.layers)):
        prefill(loaded, inputs)
    ran = {len(entries) for entries in found}
    if ran != {1}:
        raise AdapterError(
            f"adapter {loaded.adapter.name!r}: a decoder layer did not run exactly once in one "
            "forward"
        )
    device = found[0][0].device  # layers of a dispatched model may sit on several devices
    return torch.stack([entries[0].to(device) for entries in found])


class LensCurves:
    """Sums of lens entropies per layer over image and text positions, and their counts."""

    def __init__(self, layers: int):
        self.layers = layers
        self.sums = {kind: torch.zeros(layers, dtype=torch.float64) for kind in KINDS}
        self.counts = dict.fromkeys(KINDS, 0)

    def add(self, entropies: torch.Tensor, roles: torch.Tensor) -> None:
        """Add one forward's ``[layers, batch, seq]`` entropies, split by token ``roles``."""
        self.add_totals(self.totals(entropies, roles))

    @staticmethod
    def totals(entropies: torch.Tensor, roles: torch.Tensor) -> dict[str, tuple]:
        """One forward's entropy sums per layer (CPU) and position count, by kind."""
        out = {}
        for kind, role in KINDS.items():
            where = (roles == role).to(entropies.device)
            out[kind] = (entropies[:, where].sum(-1).cpu(), int(where.sum()))
        return out

    def add_totals(self, totals: dict[str, tuple]) -> None:
        """Add what :meth:`totals` gave for one forward."""
        for kind, (sums, count) in totals.items():
            self.sums[kind] += sums
            self.counts[kind] += count

    def means(self) -> dict[str, list[float | None]]:
        """Mean entropy per layer for each kind (None for a kind with no positions)."""
        return {
            kind: (self.sums[kind] / self.counts[kind]).tolist()
            if self.counts[kind]
            else [None] * self.layers
            for kind in KINDS
        }


@dataclass
class LensResult:
    """The logit lens of one task: ``original`` curves, and ``masked`` when a mask is given."""

    task: str
    domain: str | None
    samples: int
    curves: dict[str, LensCurves]

    def to_json(self) -> dict:
        original = self.curves["original"]
        return {
            "domain": self.domain,
            "samples": self.samples,
            "layers": original.layers,
            "positions": dict(original.counts),
            "mean_entropy": {name: c.means() for name, c in self.curves.items()},
        }


def measure_logit_lens(
    loaded: LoadedModel,
    tasks: dict[str, Any],
    task_domains: dict[str, str | None],
    mask: NeuronMask | None = None,
    module_set: str = "all",
    limit: int | None = None,
    chunk_size: int = 256,
    on_sample: Callable[[str], None] | None = None,
    processes: Processes = SINGLE,
) -> list[LensResult]:
    """Logit-lens curves of every task, with its domain's neurons off as well if ``mask``.

    With several ``processes`` each runs its share of the samples; the per-sample sums are
    added up in sample order on all of them."""
    model = loaded.model
    layers = len(loaded.adapter.language_model(model).layers)
    components = loaded.adapter.resolve(model) if mask is not None else []
    off = check_module_set(module_set, loaded.adapter) if mask is not None else ()
    results = []
    for task, domain in task_domains.items():
        deactivation = None
        if mask is not None:
            deactivation = Deactivation(components, mask, domain.split("+"), off)
        mine = []  # per sample: {condition: LensCurves.totals}
        for inputs in task_inputs(loaded, tasks, task, limit, processes):
            roles = loaded.adapter.token_roles(model, inputs)
            totals = {
                "original": LensCurves.totals(lens_entropies(loaded, inputs, chunk_size), roles)
            }
            if deactivation is not None:
                with deactivation:
                    entropies = lens_entropies(loaded, inputs, chunk_size)
                totals["masked"] = LensCurves.totals(entropies, roles)
            mine.append(totals)
            if on_sample:
                on_sample(task)
        per_sample = processes.in_order(mine)
        samples = len(per_sample)
        if samples == 0:
            raise MMNeuronError(f"task {task!r} has no documents")
        curves = {condition: LensCurves(layers) for condition in per_sample[0]}
        for totals in per_sample:
            for condition, by_kind in totals.items():
                curves[condition].add_totals(by_kind)
        results.append(LensResult(task, domain, samples, curves))
    return results


def write_logit_lens(results: list[LensResult], header: dict, out_dir: Path) -> list[Path]:
    """Write ``logit_lens.json`` (``header`` + definition + tasks), ``.csv`` and ``.png``."""
    paths = [out_dir / "logit_lens.json", out_dir / "logit_lens.csv", out_dir / "logit_lens.png"]
    per_task = {r.task: r.to_json() for r in results}
    write_json(paths[0], {"format": FORMAT, **header, "definition": DEFINITION, "tasks": per_task})
    rows = []
    for task, data in per_task.items():
        for condition, by_kind in data["mean_entropy"].items():
            for kind, values in by_kind.items():
                count = data["positions"][kind]
                rows += [
                    (task, data["domain"] or "", condition, kind, layer, value, count)
                    for layer, value in enumerate(values)
                ]
    write_csv(paths[1], CSV_HEADER, rows)
    titles = {t: f"{t} ({d['domain']})" if d["domain"] else t for t, d in per_task.items()}
    plot_logit_lens(paths[2], {titles[t]: d["mean_entropy"] for t, d in per_task.items()})
    return paths
