"""Running lmms-eval's evaluator in-process on the ``mmneuron`` model: results and provenance.

The evaluator is lmms-eval's own ``simple_evaluate``: tasks build their prompts, score with
their own metrics and aggregate as they do under ``python -m lmms_eval``. This module finds the
tasks, runs them with fixed seeds, and writes lmms-eval's results JSON, the per-sample logs
and our provenance, each file atomically.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmneuron_bench.distributed import one_process_view
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.formats.atomic import all_or_nothing, atomic_write
from mmneuron_bench.formats.outputs import file_reference, write_json
from mmneuron_bench.versions import versions

RUN_FORMAT = "mmneuron-run/1"


def lmms_eval_logs_to_stderr() -> None:
    """Send lmms-eval's log to stderr: stdout is for our results.

    Importing ``lmms_eval.models`` and the evaluator's judge launcher adds a stdout sink. The
    level is INFO, as lmms-eval's own CLI logs; by default the messages are dropped anyway
    (:func:`mmneuron_bench.console.quiet_libraries`) and ``--verbose`` shows them.
    """
    import lmms_eval.evaluator  # noqa: F401 - adds its sinks, which are replaced below
    import lmms_eval.models  # noqa: F401
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="INFO")


def evaluate(
    lm: Any,
    tasks: Sequence[str],
    manager: Any,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 1,
) -> dict:
    """lmms-eval's ``simple_evaluate`` on ``tasks``; every seed (Python, NumPy, torch, few-shot)
    is ``seed``, so the same call gives the same numbers. Samples are kept in ``"samples"``.

    ``bootstrap_iters=0``: lmms-eval still reports the central-limit standard error
    (``*_stderr_clt``); the bootstrap would only add minutes on large tasks.

    A model that splits its requests over processes (``lm.splits_requests``) is evaluated as
    one process on every process: each builds every request, the model answers its share
    and gathers the rest, and every process gets the results one process would.
    """
    lmms_eval_logs_to_stderr()
    from lmms_eval.evaluator import simple_evaluate

    from mmneuron_bench.lmms.workarounds import check_chat_tasks

    base = getattr(lm, "base_name", type(lm).__name__)
    check_chat_tasks(base, getattr(lm, "is_simple", True), tasks, manager)
    with one_process_view() if getattr(lm, "splits_requests", False) else nullcontext():
        return simple_evaluate(
            model=lm,
            tasks=list(tasks),
            task_manager=manager,
            limit=limit,
            batch_size=batch_size,
            bootstrap_iters=0,
            log_samples=True,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
            verbosity="WARNING",
        )


@dataclass(frozen=True)
class MetricValue:
    """One metric of one task, as lmms-eval aggregated it (``stderr``: central-limit)."""

    task: str
    metric: str
    filter: str
    value: Any
    stderr: Any


def task_metrics(results: dict) -> list[MetricValue]:
    """Every metric of every task in lmms-eval's results, in the order lmms-eval wrote them."""
    rows = []
    for task, entries in results["results"].items():
        for key, value in entries.items():
            metric, sep, filter_name = key.partition(",")
            if not sep or "_stderr" in metric:
                continue
            stderr = entries.get(f"{metric}_stderr_clt,{filter_name}")
            rows.append(MetricValue(task, metric, filter_name, value, stderr))
    return rows


def metric_value(results: dict, task: str, metric: str) -> float:
    """The aggregated value of ``metric`` (``"name"`` or ``"name,filter"``) for ``task``."""
    name, _, filter_name = metric.partition(",")
    for row in task_metrics(results):
        if row.task == task and row.metric == name and filter_name in ("", row.filter):
            if isinstance(row.value, bool) or not isinstance(row.value, (int, float)):
                raise MMNeuronError(f"task {task!r}: metric {metric!r} is not a number")
            return float(row.value)
    raise MMNeuronError(f"task {task!r} reported no metric {metric!r}")


def document_scores(results: dict, task: str, metric: str) -> list[float] | None:
    """The per-document values of ``metric`` (``"name"`` or ``"name,filter"``) in document
    order, from the logged samples; None when a document's value is not a number (a metric
    that only aggregates, such as a submission file)."""
    name = metric.partition(",")[0]
    samples = sorted(results.get("samples", {}).get(task, []), key=lambda s: s["doc_id"])
    values = [s.get(name) for s in samples]
    if not values or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    ):
        return None
    return [float(v) for v in values]


def generation_settings(task_configs: dict[str, dict]) -> dict[str, Any]:
    """Each task's generation settings (None for loglikelihood tasks).

    ``task_configs``: lmms-eval's task configs by name (``results["configs"]`` or
    ``task.dump_config()``). Bases fill in what a task leaves out: lmms-eval 0.7.3's
    ``llava_hf`` and ``instructblip`` decode greedily unless the task sets a temperature > 0.
    """
    return {
        task: config.get("generation_kwargs")
        if str(config.get("output_type", "")).startswith("generate")
        else None
        for task, config in task_configs.items()
    }


def provenance(
    lm: Any,
    settings: dict,
    mask_path: str | os.PathLike | None = None,
    stats_path: str | os.PathLike | None = None,
    task_configs: dict[str, dict] | None = None,
) -> dict:
    """Our record of a run: model, adapter, base, mask file and what it switched off per task
    (domains, neuron counts), stats file, every other intervention, settings, generation
    settings and versions."""
    described = lm.describe()
    mask = described.pop("mask", None)
    mask_ref = file_reference(mask_path) if mask_path is not None else {}
    return {
        "format": RUN_FORMAT,
        "model": described.pop("model"),
        "base": described.pop("base"),
        "mask": {**mask_ref, **(mask or {})} or None,
        "stats": None if stats_path is None else file_reference(stats_path),
        "interventions": described,
        "settings": settings,
        "generation": generation_settings(task_configs or {}),
        "versions": versions(),
    }


def write_results_json(path: Path, value: Any) -> None:
    """lmms-eval's results as JSON, atomically (what JSON cannot hold becomes its ``str``)."""
    from lmms_eval.utils import handle_non_serializable

    write_json(path, value, default=handle_non_serializable)


def write_run(out_dir: Path, results: dict, provenance: dict) -> list[Path]:
    """``results.json`` (lmms-eval's results), ``samples_TASK.jsonl``, ``provenance.json``:
    all of them, or none if one cannot be written."""
    from lmms_eval.utils import handle_non_serializable

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with all_or_nothing():
        for task, samples in results.get("samples", {}).items():
            path = out_dir / f"samples_{task}.jsonl"
            lines = "".join(
                json.dumps(s, default=handle_non_serializable, ensure_ascii=False) + "\n"
                for s in samples
            )
            atomic_write(path, lambda tmp, text=lines: Path(tmp).write_text(text, encoding="utf-8"))
            written.append(path)
        write_results_json(
            out_dir / "results.json", {k: v for k, v in results.items() if k != "samples"}
        )
        write_results_json(out_dir / "provenance.json", provenance)
    return [out_dir / "results.json", *written, out_dir / "provenance.json"]
