"""Domains are lmms-eval tasks: loading their documents as (image, question) samples."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from mmneuron_bench.errors import MMNeuronError


@dataclass(frozen=True)
class Sample:
    """One document of one task, by position, so that a run can be resumed and sharded."""

    task: str
    index: int


def parse_domains(values: tuple[str, ...] | list[str]) -> dict[str, list[str]]:
    """``["medical=pmc_vqa,slake", ...]`` -> ``{"medical": ["pmc_vqa", "slake"]}``."""
    domains: dict[str, list[str]] = {}
    for value in values:
        name, sep, tasks = value.partition("=")
        task_list = [t.strip() for t in tasks.split(",") if t.strip()]
        if not sep or not name.strip() or not task_list:
            raise MMNeuronError(f"--domain {value!r} is not of the form NAME=TASK[,TASK...]")
        if "/" in name:
            raise MMNeuronError(f"domain name {name!r} must not contain '/'")
        if name in domains:
            raise MMNeuronError(f"domain {name!r} is given twice")
        domains[name.strip()] = task_list
    if not domains:
        raise MMNeuronError("give at least one --domain NAME=TASK[,TASK...]")
    return domains


def load_tasks(names: list[str], include_paths: list[str]) -> dict[str, Any]:
    """lmms-eval task objects by name: ``include_paths``, then ours (``tasks/``), then lmms-eval's."""
    for path in include_paths:
        if not os.path.isdir(path):
            raise MMNeuronError(f"include path {path!r} is not a directory")
    from lmms_eval.tasks import TaskManager

    from mmneuron_bench.tasks import TASKS_DIR

    # The user's folders first (the first definition of a name wins), then ours. Indexing only
    # these is fast; lmms-eval's own tasks are indexed only when a name is not found here.
    search = [*include_paths, str(TASKS_DIR)]
    manager = TaskManager(include_path=search, include_defaults=False)
    if not set(names) <= set(manager.all_tasks):
        manager = TaskManager(include_path=search)
    missing = sorted(set(names) - set(manager.all_tasks))
    if missing:
        where = f" (include paths: {', '.join(include_paths)})" if include_paths else ""
        raise MMNeuronError(f"task {missing[0]!r} not found among lmms-eval's tasks{where}")
    try:
        loaded = manager.load_task_or_group(list(dict.fromkeys(names)))
    except Exception as exc:  # noqa: BLE001 - any dataset or YAML failure, said in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MMNeuronError(f"cannot load tasks {', '.join(names)}: {first}") from None
    return {name: loaded[name] for name in names}


def domain_samples(tasks: dict[str, Any], task_names: list[str], limit: int | None) -> list[Sample]:
    """The samples of one domain in a fixed order: each task's first ``limit`` documents."""
    samples = []
    for name in task_names:
        count = len(tasks[name].eval_docs)
        samples += [Sample(name, i) for i in range(count if limit is None else min(limit, count))]
    return samples


def sample_content(tasks: dict[str, Any], sample: Sample) -> tuple[Any, str]:
    """The image and the question text the task itself builds for one document."""
    task = tasks[sample.task]
    doc = task.eval_docs[sample.index]
    visuals = task.doc_to_visual(doc)
    if len(visuals) != 1:
        raise MMNeuronError(
            f"task {sample.task!r} document {sample.index} has {len(visuals)} images; "
            "recording supports exactly one image per document"
        )
    return visuals[0].convert("RGB"), task.doc_to_text(doc)
