"""Domains are lmms-eval tasks: loading their documents as (image, question) samples."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mmneuron_bench.errors import MMNeuronError


@dataclass(frozen=True)
class Sample:
    """One document of one task, by position, so that a run can be resumed and sharded."""

    task: str
    index: int


def task_manager(names: Sequence[str], include_paths: Sequence[str], model_name: str | None = None):
    """An lmms-eval TaskManager that knows every task of ``names``.

    Searched in order: ``include_paths``, our shipped ``tasks/``, then lmms-eval's own tasks,
    which are indexed only when a name is not found in the first two (0.01 s instead of 5 s).
    ``model_name`` picks the tasks' model-specific prompts (``lmms_eval_specific_kwargs``).
    A task of ours or of an include path whose name a shipped task also has is refused when
    the shipped tasks are indexed too: lmms-eval 0.7.3 would silently run the shipped one.
    """
    for path in include_paths:
        if not os.path.isdir(path):
            raise MMNeuronError(f"include path {path!r} is not a directory")
    from lmms_eval.tasks import TaskManager

    from mmneuron_bench.tasks import TASKS_DIR

    paths = [*include_paths, str(TASKS_DIR)]
    own = TaskManager("WARNING", include_path=paths, include_defaults=False, model_name=model_name)
    if set(names) <= set(own.all_tasks):
        return own
    manager = TaskManager("WARNING", include_path=paths, model_name=model_name)
    missing = [n for n in names if n not in manager.all_tasks]
    if missing:
        where = f" (include paths: {', '.join(include_paths)})" if include_paths else ""
        raise MMNeuronError(f"task {missing[0]!r} not found among lmms-eval's tasks{where}")
    for name in names:
        if name in own.all_tasks and own.task_index[name] != manager.task_index[name]:
            raise MMNeuronError(
                f"task {name!r} of {own.task_index[name]['yaml_path']} has the name of a task "
                "shipped with lmms-eval, which lmms-eval 0.7.3 runs instead; rename it"
            )
    return manager


def load_tasks(names: list[str], include_paths: list[str]) -> dict[str, Any]:
    """lmms-eval task objects by name (found as :func:`task_manager` finds them)."""
    manager = task_manager(names, include_paths)
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


def sample_content(tasks: dict[str, Any], sample: Sample, bare: bool = False) -> tuple[Any, str]:
    """The image and the question text the task itself builds for one document.

    ``bare``: the question without the task's ``pre_prompt`` and ``post_prompt`` (the official
    MMNeuron identification feeds the bare question).
    """
    task = tasks[sample.task]
    doc = task.eval_docs[sample.index]
    visuals = task.doc_to_visual(doc)
    if len(visuals) != 1:
        raise MMNeuronError(
            f"task {sample.task!r} document {sample.index} has {len(visuals)} images; "
            "recording supports exactly one image per document"
        )
    return visuals[0].convert("RGB"), question_text(task, doc, bare)


def question_text(task: Any, doc: Any, bare: bool = False) -> str:
    """``task.doc_to_text(doc)``, or with ``bare`` the same without the pre- and post-prompt of
    the task's ``lmms_eval_specific_kwargs``."""
    kwargs = getattr(task, "lmms_eval_specific_kwargs", None)
    function = task.config.doc_to_text
    if not bare or kwargs is None or not callable(function):
        return task.doc_to_text(doc)
    return function(doc, {**kwargs, "pre_prompt": "", "post_prompt": ""})
