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


def expand_task_names(manager: Any, names: Sequence[str]) -> list[str]:
    """``names`` with every lmms-eval tag and group replaced by its tasks (recursively), each
    task once, in order (a group's as its YAML lists them, a tag's sorted by name).

    A group that defines a task inline (a YAML mapping with settings of its own) is refused:
    its tasks cannot be run or read by name.
    """
    from lmms_eval.utils import load_yaml_config

    out: list[str] = []

    def visit(name: str, within: tuple[str, ...]) -> None:
        entry = manager.task_index.get(name)
        if entry is None:
            where = f" (in group {within[-1]!r})" if within else ""
            raise MMNeuronError(f"task {name!r}{where} not found")
        if entry["type"] in ("task", "python_task"):
            out.append(name)
            return
        if name in within:
            raise MMNeuronError(f"group {name!r} contains itself")
        if entry["type"] == "tag" or entry.get("yaml_path", -1) == -1:
            members = sorted(entry["task"])  # lmms-eval lists them in file-system order
        else:
            members = load_yaml_config(yaml_path=entry["yaml_path"], mode="simple").get("task")
            members = members if isinstance(members, list) else [members]
        for member in members:
            if not isinstance(member, str):
                raise MMNeuronError(
                    f"group {name!r} defines a task inline ({str(member)[:60]}), which cannot "
                    "be run by name; give its tasks by name"
                )
            visit(member, (*within, name))

    for name in names:
        visit(name, ())
    return list(dict.fromkeys(out))


def load_tasks(
    names: Sequence[str], include_paths: Sequence[str], manager: Any = None
) -> dict[str, Any]:
    """lmms-eval task objects by name, tags and groups expanded to their tasks
    (:func:`expand_task_names`), found as :func:`task_manager` finds them.

    Every local data file is checked first, and a task that fails to load or has no
    documents is refused, naming it.
    """
    from mmneuron_bench.domains.index import check_data_files

    manager = manager or task_manager(names, include_paths)
    tasks = {}
    expanded = expand_task_names(manager, names)
    check_data_files(expanded, include_paths)
    for name in expanded:
        try:
            loaded = manager.load_task_or_group([name])[name]
        except Exception as exc:  # noqa: BLE001 - any dataset or YAML failure, said in one line
            raise MMNeuronError(f"cannot load task {name!r}: {_cause(exc)}") from None
        if not len(loaded.eval_docs):
            raise MMNeuronError(f"task {name!r} has no documents")
        tasks[name] = loaded
    return tasks


def _cause(exc: BaseException) -> str:
    """What went wrong, in one line: a retried call's last error (datasets' downloads retry),
    an empty task as such."""
    from tenacity import RetryError

    while isinstance(exc, RetryError) and exc.last_attempt.failed:
        exc = exc.last_attempt.exception()
    text = " ".join(str(exc).split())
    if isinstance(exc, IndexError) and "for size 0" in text:
        return "it has no documents"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
