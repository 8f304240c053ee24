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
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmneuron_bench.analysis.uncertainty import Change, change
from mmneuron_bench.distributed import SINGLE, Processes
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.formats.outputs import write_csv
from mmneuron_bench.formats.stats import ActivationStats
from mmneuron_bench.interventions.targets import DomainChoice
from mmneuron_bench.lmms.evaluate import document_scores, metric_value, write_results_json
from mmneuron_bench.selection.random import select_random_like
from mmneuron_bench.tables import Table

GRID_FORMAT = "mmneuron-grid/1"
CSV_COLUMNS = ("module_set", "mask", "task", "domain", "metric", "value")


@dataclass(frozen=True)
class Cell:
    """One evaluation of the grid; a random cell names the seed of its mask."""

    module_set: str
    mask: str  # "dape" (the given mask) or "random"
    task: str
    seed: int | None = None

    @classmethod
    def of(cls, cell: dict) -> Cell:
        return cls(cell["module_set"], cell["mask"], cell["task"], cell.get("seed"))


def random_seeds(header: dict, seed: int) -> list[int | None]:
    """The seeds of the random baseline's masks: ``--random-seeds K`` gives ``seed`` to
    ``seed + K - 1``; a grid of one random mask (the default) names no seed in its cells."""
    count = header.get("random_seeds", 1)
    return [None] if count == 1 else list(range(seed, seed + count))


# The module sets of an extra row's cells: the intervention alone, and with the mask on all.
EXTRA_MODULE_SETS = ("none", "all")


def plan_cells(
    module_sets: Sequence[str],
    tasks: Sequence[str],
    baseline: str | None,
    seeds: Sequence[int | None] = (None,),
    extra_rows: Sequence[str] = (),
) -> list[Cell]:
    """Every cell in evaluation order: the mask's rows, the random baseline's (one set of rows
    per seed), then the extra rows' (per-document interventions)."""
    cells = [Cell(s, "dape", t) for s in module_sets for t in tasks]
    if baseline:
        cells += [
            Cell(s, baseline, t, seed)
            for seed in seeds
            for s in module_sets
            if s != "none"
            for t in tasks
        ]
    return cells + [
        Cell(m, kind, t) for kind in extra_rows for m in EXTRA_MODULE_SETS for t in tasks
    ]


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
    random_seeds: int = 1,
    extra_rows: Sequence[str] = (),
) -> dict:
    """Everything in ``grid.json`` but the cells (``random_seeds`` only when more than one,
    ``extra_rows`` only when there are some)."""
    header = {
        "format": GRID_FORMAT,
        "model": model,
        "mask": {"path": mask_ref["path"], "sha256": mask_ref["sha256"]},
        "baseline": baseline,
        "module_sets": list(module_sets),
        "tasks": tasks,
    }
    if random_seeds != 1:
        header["random_seeds"] = random_seeds
    if extra_rows:
        header["extra_rows"] = list(extra_rows)
    return header


def load_cells(out_dir: Path, header: dict) -> list[dict]:
    """The cells of an earlier run of the same grid in ``out_dir`` ([] when there is none).

    A ``grid.json`` of another grid (model, mask, baseline, module sets, tasks, domains or
    metrics differ) is refused: resuming it would mix two grids. The mask counts by its
    content and the model by its fingerprint, however their paths are spelled.
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
        if _comparable(key, json.loads(json.dumps(value))) != _comparable(key, found.get(key)):
            raise MMNeuronError(
                f"{path} holds another grid ({key} differs); give another --output to start anew"
            )
    return list(found.get("cells", []))


def _comparable(key: str, value: Any) -> Any:
    """A header entry as compared between runs: without the paths it was given by."""
    if key == "mask" and isinstance(value, dict):
        return value.get("sha256")
    if key == "model" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "name_or_path"}
    return value


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
    processes: Processes = SINGLE,
) -> list[dict]:
    """Evaluate every cell not yet in ``out_dir/grid.json``, saving the grid after each.

    ``lm`` is an :class:`~mmneuron_bench.lmms.model.MMNeuronLMM`; ``evaluate(task)`` runs
    lmms-eval on one task and returns its results. ``extras`` are the interventions of the
    header's ``extra_rows`` (by their ``kind``), held by ``lm`` only for their own cells.
    Returns all cells, in plan order. Under ``accelerate launch`` every process evaluates
    every cell (each answering its share of the documents) and only the main one of
    ``processes`` writes.
    """
    extra = {intervention.kind: intervention for intervention in extras}
    if processes.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    cells = load_cells(out_dir, header)
    done = {Cell.of(c) for c in cells}
    seeds = random_seeds(header, seed)
    random_masks = {}
    if header["baseline"] == "random":
        for domain in dict.fromkeys(task["domain"] for task in header["tasks"].values()):
            for s in seeds:
                random_masks[(domain, s)] = select_random_like(
                    mask, seed if s is None else s, together=domain.split("+")
                )
    extra_rows = header.get("extra_rows", [])
    plan = plan_cells(
        header["module_sets"], list(header["tasks"]), header["baseline"], seeds, extra_rows
    )
    for cell in plan:
        if cell in done:
            continue
        task = header["tasks"][cell.task]
        lm.set_mask(
            random_masks[(task["domain"], cell.seed)] if cell.mask == "random" else mask,
            modules=cell.module_set,
            domain=task["domain"],
            mode=mode,
            stats=stats,
        )
        if cell.mask in extra:
            lm.interventions.add(extra[cell.mask])
        try:
            results = evaluate(cell.task)
        finally:
            for kind in extra:
                lm.interventions.remove(kind)
        value = metric_value(results, cell.task, task["metric"])
        entry = {
            "module_set": cell.module_set,
            "mask": cell.mask,
            "task": cell.task,
            "domain": task["domain"],
            "metric": task["metric"],
            "value": value,
            "scores": document_scores(results, cell.task, task["metric"]),
        }
        cells.append(entry if cell.seed is None else {**entry, "seed": cell.seed})
        if processes.main:
            save_grid(out_dir, header, cells)
        if on_cell is not None:
            on_cell(cell, value)
    order = {cell: i for i, cell in enumerate(plan)}
    return sorted(cells, key=lambda c: order[Cell.of(c)])


def cell_changes(cells: list[dict], seed: int = 0) -> dict[Cell, Change]:
    """Each cell's paired change against the task's ``none`` cell (nothing off, no extra
    intervention; documents in the same order), where both have per-document scores."""
    plain = {c["task"]: c for c in cells if _is_plain(c)}
    out = {}
    for cell in cells:
        base = plain.get(cell["task"], {}).get("scores")
        scores = cell.get("scores")
        if not _is_plain(cell) and base and scores and len(base) == len(scores):
            out[Cell.of(cell)] = change(base, scores, seed=seed)
    return out


def _is_plain(cell: dict) -> bool:
    return cell["module_set"] == "none" and cell["mask"] == "dape"


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:+.3f}"
    return f"{statistics.fmean(values):+.3f} ± {statistics.stdev(values):.3f}"


def grid_tables(header: dict, cells: list[dict], seed: int = 0) -> list[Table]:
    """The grid as tables: the metric values (random rows: mean ± sd over the seeds), then each
    cell's change against ``none`` with its 95 % paired-bootstrap interval (``*``: the interval
    excludes 0) and, for 0/1 scores, the exact McNemar p-value."""
    tasks = header["tasks"]
    seeds = random_seeds(header, seed)
    module_sets = header["module_sets"]
    rows = [(s, "dape") for s in module_sets]
    if header["baseline"]:
        rows += [(s, header["baseline"]) for s in module_sets if s != "none"]
    rows += [(m, kind) for kind in header.get("extra_rows", []) for m in EXTRA_MODULE_SETS]
    by_cell = {Cell.of(c): c for c in cells}
    changes = cell_changes(cells, seed)
    values, shifts = [], []
    for module_set, mask in rows:
        value_row, change_row = [row_label(module_set, mask)], [row_label(module_set, mask)]
        for task in tasks:
            keys = [Cell(module_set, mask, task, s if mask == "random" else None) for s in seeds]
            found = [by_cell[k] for k in dict.fromkeys(keys) if k in by_cell]
            if not found:
                value_row.append("-")
                change_row.append("-")
                continue
            numbers = [c["value"] for c in found if isinstance(c["value"], (int, float))]
            if len(numbers) < len(found):
                value_row.append("-")  # a metric lmms-eval could not compute
            else:
                value_row.append(
                    f"{numbers[0]:.4f}" if len(numbers) == 1 else _mean_sd(numbers).lstrip("+")
                )
            change_row.append(_change_text([changes.get(Cell.of(c)) for c in found]))
        values.append(value_row)
        if (module_set, mask) != ("none", "dape"):
            shifts.append(change_row)
    columns = [f"{task} ({info['domain']}, {info['metric']})" for task, info in tasks.items()]
    title = f"{header['model']['name_or_path']}: {header['mask']['path']}"
    caption = (
        "change against none, 95 % paired-bootstrap interval over documents; p: exact McNemar; "
        "* the interval excludes 0 (and p < 0.05)"
    )
    if len(seeds) > 1:
        caption += "; random: mean ± sd over seeds"
    return [
        Table(title, ["module set", *columns], values),
        Table(caption, ["module set", *columns], shifts, heat=True),
    ]


def _change_text(changes: list[Change | None]) -> str:
    if any(c is None for c in changes):
        return "-"
    if len(changes) > 1:
        return _mean_sd([c.value for c in changes])
    c = changes[0]
    p = "" if c.p_mcnemar is None else f" p={c.p_mcnemar:.2g}"
    mark = " *" if c.significant else ""
    return f"{c.value:+.3f} [{c.low:+.3f}, {c.high:+.3f}]{p}{mark}"
