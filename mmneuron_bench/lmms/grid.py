"""The paper's Table 1: every task with its own domain's neurons off, per module set.

One loaded ``mmneuron`` model is evaluated once per cell (module set, mask, task). The mask is
the given one (``"dape"``) or, with the random baseline, :func:`select_random_like` of it
(``"random"``): as many neurons per domain, component and layer, and for a task with
'+'-joined domains as many as the union of theirs. Module set ``none`` switches
nothing off and is evaluated once, under ``"dape"``. A per-document intervention given to the
grid (FastMem: ``--intervention fastmem=1``) adds rows instead of changing every cell: the
intervention alone (module set ``none``) and with the task's DAPE neurons off in every module
(``all``), as cells whose ``mask`` is the intervention's kind (``"fastmem"``); ``grid.json``
then lists the kinds under ``"extra_rows"``.

Files (read by other tools; keep them exactly):

- ``grid.json``: ``{"format": "mmneuron-grid/1", "model", "mask": {"path", "sha256"},
  "baseline", "module_sets", "tasks": {task: {"domain", "metric"}}, "cells": [{"module_set",
  "mask", "task", "domain", "metric", "value"}]}``
- ``grid.csv``: the cells, columns ``module_set,mask,task,domain,metric,value``.

Both are rewritten atomically after every cell, so an interrupted grid resumes from the cells
already written and never evaluates one twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.formats.outputs import write_csv
from mmneuron_bench.formats.stats import ActivationStats
from mmneuron_bench.interventions.targets import DomainChoice
from mmneuron_bench.lmms.evaluate import metric_value, write_results_json
from mmneuron_bench.selection.random import select_random_like

GRID_FORMAT = "mmneuron-grid/1"
CSV_COLUMNS = ("module_set", "mask", "task", "domain", "metric", "value")


@dataclass(frozen=True)
class Cell:
    """One evaluation of the grid."""

    module_set: str
    mask: str  # "dape" (the given mask) or "random"
    task: str


# The module sets of an extra row's cells: the intervention alone, and with the mask on all.
EXTRA_MODULE_SETS = ("none", "all")


def plan_cells(
    module_sets: Sequence[str],
    tasks: Sequence[str],
    baseline: str | None,
    extra_rows: Sequence[str] = (),
) -> list[Cell]:
    """Every cell in evaluation order: the mask's rows, the random baseline's, the extras'."""
    kinds = ["dape"] + ([baseline] if baseline else [])
    cells = [
        Cell(module_set, kind, task)
        for kind in kinds
        for module_set in module_sets
        if not (kind != "dape" and module_set == "none")
        for task in tasks
    ]
    extra = [Cell(m, kind, t) for kind in extra_rows for m in EXTRA_MODULE_SETS for t in tasks]
    return cells + extra


def row_label(module_set: str, mask: str) -> str:
    """Table row of a cell: the module set, marked for the random baseline; an extra row is
    its intervention (``fastmem``) or the intervention with the mask (``all + fastmem``)."""
    if mask in ("dape", "random"):
        return module_set if mask == "dape" else f"{module_set} ({mask})"
    return mask if module_set == "none" else f"{module_set} + {mask}"


def grid_tasks(
    tasks: Mapping[str, Any], mask: NeuronMask, domain: DomainChoice | str = "auto"
) -> dict:
    """``{task: {"domain", "metric"}}``: each task's domain(s) (``+``-joined) and first metric.

    ``tasks`` are lmms-eval Task objects by name; ``domain`` chooses each task's mask domains
    as the ``mmneuron`` model does.
    """
    domain = domain if isinstance(domain, DomainChoice) else DomainChoice.parse(domain)
    out = {}
    for name, task in tasks.items():
        config = getattr(task, "config", None)
        if config is None:
            raise MMNeuronError(f"{name!r} is a group of tasks; the grid's columns are tasks")
        metrics = config.metric_list or []
        if not metrics:
            raise MMNeuronError(f"task {name!r} lists no metric (metric_list)")
        out[name] = {"metric": str(metrics[0]["metric"])}
    for name, domains in domain.resolve(tasks, mask.domains).items():
        out[name] = {"domain": domains, **out[name]}
    return out


def grid_header(
    model: dict,
    mask_ref: dict,
    baseline: str | None,
    tasks: dict,
    module_sets: Sequence[str],
    extra_rows: Sequence[str] = (),
) -> dict:
    """Everything in ``grid.json`` but the cells (``extra_rows`` only when there are some)."""
    header = {
        "format": GRID_FORMAT,
        "model": model,
        "mask": {"path": mask_ref["path"], "sha256": mask_ref["sha256"]},
        "baseline": baseline,
        "module_sets": list(module_sets),
        "tasks": tasks,
    }
    return {**header, "extra_rows": list(extra_rows)} if extra_rows else header


def load_cells(out_dir: Path, header: dict) -> list[dict]:
    """The cells of an earlier run of the same grid in ``out_dir`` ([] when there is none).

    A ``grid.json`` of another grid (model, mask, baseline, module sets, tasks, domains or
    metrics differ) is refused: resuming it would mix two grids.
    """
    path = out_dir / "grid.json"
    if not path.exists():
        return []
    try:
        found = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MMNeuronError(f"{path}: not a readable grid file ({exc})") from None
    if not isinstance(found, dict) or found.get("format") != GRID_FORMAT:
        raise MMNeuronError(f"{path}: not a {GRID_FORMAT} file")
    for key, value in header.items():
        if json.loads(json.dumps(value)) != found.get(key):
            raise MMNeuronError(
                f"{path} holds another grid ({key} differs); give another --output to start anew"
            )
    return list(found.get("cells", []))


def save_grid(out_dir: Path, header: dict, cells: list[dict]) -> None:
    """Write ``grid.json`` and ``grid.csv`` atomically."""
    write_results_json(out_dir / "grid.json", {**header, "cells": cells})
    write_csv(out_dir / "grid.csv", CSV_COLUMNS, ([cell[k] for k in CSV_COLUMNS] for cell in cells))


def run_grid(
    lm: Any,
    mask: NeuronMask,
    header: dict,
    evaluate: Callable[[str], dict],
    out_dir: Path,
    seed: int = 0,
    mode: str = "zero",
    stats: ActivationStats | None = None,
    on_cell: Callable[[Cell, float], None] | None = None,
    extras: Sequence[Any] = (),
) -> list[dict]:
    """Evaluate every cell not yet in ``out_dir/grid.json``, saving the grid after each.

    ``lm`` is an :class:`~mmneuron_bench.lmms.model.MMNeuronLMM`; ``evaluate(task)`` runs
    lmms-eval on one task and returns its results. ``extras`` are the interventions of the
    header's ``extra_rows`` (by their ``kind``), held by ``lm`` only for their own cells.
    Returns all cells, in plan order.
    """
    extra = {intervention.kind: intervention for intervention in extras}
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = load_cells(out_dir, header)
    done = {Cell(c["module_set"], c["mask"], c["task"]) for c in cells}
    random_masks = {}
    if header["baseline"] == "random":
        for domain in dict.fromkeys(task["domain"] for task in header["tasks"].values()):
            random_masks[domain] = select_random_like(mask, seed, together=domain.split("+"))
    extra_rows = header.get("extra_rows", [])
    plan = plan_cells(header["module_sets"], list(header["tasks"]), header["baseline"], extra_rows)
    for cell in plan:
        if cell in done:
            continue
        task = header["tasks"][cell.task]
        lm.set_mask(
            mask if cell.mask != "random" else random_masks[task["domain"]],
            modules=cell.module_set,
            domain=task["domain"],
            mode=mode,
            stats=stats,
        )
        if cell.mask in extra:
            lm.interventions.add(extra[cell.mask])
        try:
            value = metric_value(evaluate(cell.task), cell.task, task["metric"])
        finally:
            for kind in extra:
                lm.interventions.remove(kind)
        cells.append(
            {
                "module_set": cell.module_set,
                "mask": cell.mask,
                "task": cell.task,
                "domain": task["domain"],
                "metric": task["metric"],
                "value": value,
            }
        )
        save_grid(out_dir, header, cells)
        if on_cell is not None:
            on_cell(cell, value)
    order = {cell: i for i, cell in enumerate(plan)}
    return sorted(cells, key=lambda c: order[Cell(c["module_set"], c["mask"], c["task"])])
