"""How far switching a task's domain neurons off moves the language model's last hidden
states, against random neurons of the same number (the paper's Table 2)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmneuron_bench.analysis.inputs import prefill, task_inputs
from mmneuron_bench.distributed import SINGLE, Processes
from mmneuron_bench.errors import AdapterError, MMNeuronError
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.formats.outputs import write_csv, write_json
from mmneuron_bench.interventions.mask import Deactivation
from mmneuron_bench.interventions.targets import (
    MODULE_SETS,
    check_module_set,
    runnable_module_sets,
)
from mmneuron_bench.models.adapter import PAD, LoadedModel
from mmneuron_bench.models.hooks import forward_hooks
from mmneuron_bench.selection.random import select_random_like

FORMAT = "mmneuron-deviation/1"
DEFINITION = (
    "deviation = 100 * mean over samples s of ||H'_s - H_s||_2 / ||H_s||_2, where H_s is the "
    "[positions x hidden] matrix of the language model's last hidden state (the output of its "
    "final norm, which the LM head reads; transformers' hidden_states[-1]) at every non-padding "
    "position of the language model's input (image and text tokens of the prompt), from one "
    "prefill forward; H'_s is the same with the task domain's neurons of the module set off "
    "(set to 0; for '+'-joined domains, the union of their neurons); ||.||_2 is the L2 norm of "
    "the flattened matrix; float64. random: the same for select_random_like(mask, seed, the "
    "task's domains), seeds 0..S-1 (as many neurons per component and layer as the mask's "
    "union), as mean and population std (ddof=0)."
)
CSV_HEADER = (
    "task",
    "domain",
    "module_set",
    "samples",
    "neurons",
    "dape",
    "random_mean",
    "random_std",
)


@dataclass
class DeviationRow:
    """One task and module set: deviations in percent, for the mask and each random seed."""

    task: str
    domain: str
    module_set: str
    samples: int
    neurons: int  # neurons switched off (the same for the mask and every random seed)
    dape: float
    random: list[float]
    unused: int = 0  # of the mask's neurons, those in layers the model never reads

    @property
    def random_mean(self) -> float:
        return statistics.fmean(self.random)

    @property
    def random_std(self) -> float:
        return statistics.pstdev(self.random)

    def to_json(self) -> dict:
        return {
            "task": self.task,
            "domain": self.domain,
            "module_set": self.module_set,
            "samples": self.samples,
            "neurons": self.neurons,
            "neurons_in_unused_layers": self.unused,
            "dape": self.dape,
            "random_mean": self.random_mean,
            "random_std": self.random_std,
            "random": self.random,
        }


def last_hidden(loaded: LoadedModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The final norm's output at the non-padding positions, float64 ``[positions, hidden]``."""
    model = loaded.model
    final_norm = loaded.adapter.language_model(model).final_norm
    captured = []
    with forward_hooks([(final_norm, lambda _m, _a, out: captured.append(out))]):
        prefill(loaded, inputs)
    if len(captured) != 1:
        raise AdapterError(
            f"adapter {loaded.adapter.name!r}: the final norm ran {len(captured)} times in one "
            "forward (expected once)"
        )
    keep = loaded.adapter.token_roles(model, inputs) != PAD
    return captured[0][keep.to(captured[0].device)].to(torch.float64)


def relative_deviation(h: torch.Tensor, h_masked: torch.Tensor) -> float:
    """``||h_masked - h||_2 / ||h||_2`` over all entries (float64)."""
    h, h_masked = h.to(torch.float64), h_masked.to(torch.float64)
    return float(torch.linalg.vector_norm(h_masked - h) / torch.linalg.vector_norm(h))


def measure_deviation(
    loaded: LoadedModel,
    tasks: dict[str, Any],
    task_domains: dict[str, str],
    mask: NeuronMask,
    module_sets: Sequence[str] | None = None,
    seeds: int = 3,
    limit: int | None = None,
    on_sample: Callable[[str], None] | None = None,
    processes: Processes = SINGLE,
) -> list[DeviationRow]:
    """Deviation rows for every task (with its domain's neurons) and module set.

    Each sample's unmasked hidden states are computed once and compared with one masked
    forward per module set and mask (the DAPE mask, then each random seed). ``module_sets``
    defaults to the paper's five, less those naming a role the model has no neurons of; a
    given set naming such a role is refused. With several ``processes`` each measures its
    share of the samples, and the per-sample deviations are summed in sample order on all.
    """
    if module_sets is None:
        module_sets = runnable_module_sets(list(MODULE_SETS), loaded.adapter)[0]
    roles = {s: check_module_set(s, loaded.adapter) for s in module_sets}
    components = loaded.adapter.resolve(loaded.model)
    rows = []
    for task, domain in task_domains.items():
        together = domain.split("+")
        masks = [mask, *(select_random_like(mask, seed, together) for seed in range(seeds))]
        plans = {
            s: [Deactivation(components, m, domain.split("+"), roles[s]) for m in masks]
            for s in module_sets
        }
        mine = []  # per sample: {module set: [deviation under each mask]}
        for inputs in task_inputs(loaded, tasks, task, limit, processes):
            h = last_hidden(loaded, inputs)
            values = {s: [] for s in module_sets}
            for s, deactivations in plans.items():
                for deactivation in deactivations:
                    with deactivation:
                        values[s].append(relative_deviation(h, last_hidden(loaded, inputs)))
            mine.append(values)
            if on_sample:
                on_sample(task)
        per_sample = processes.in_order(mine)
        samples = len(per_sample)
        if samples == 0:
            raise MMNeuronError(f"task {task!r} has no documents")
        sums = {s: [0.0] * len(masks) for s in module_sets}
        for values in per_sample:
            for s in module_sets:
                for i, value in enumerate(values[s]):
                    sums[s][i] += value
        for s in module_sets:
            percent = [100.0 * total / samples for total in sums[s]]
            counts = plans[s][0].layer_counts
            neurons = sum(plans[s][0].counts.values())
            unused = sum(counts[c.name][layer] for c in components for layer in c.unused_layers)
            rows.append(
                DeviationRow(task, domain, s, samples, neurons, percent[0], percent[1:], unused)
            )
    return rows


def write_deviation(rows: list[DeviationRow], header: dict, out_dir: Path) -> list[Path]:
    """Write ``deviation.json`` (``header`` + definition + rows) and ``deviation.csv``."""
    paths = [out_dir / "deviation.json", out_dir / "deviation.csv"]
    write_json(
        paths[0],
        {"format": FORMAT, **header, "definition": DEFINITION, "rows": [r.to_json() for r in rows]},
    )
    write_csv(
        paths[1],
        CSV_HEADER,
        (
            (
                r.task,
                r.domain,
                r.module_set,
                r.samples,
                r.neurons,
                r.dape,
                r.random_mean,
                r.random_std,
            )
            for r in rows
        ),
    )
    return paths
