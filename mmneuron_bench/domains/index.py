"""The lmms-eval tasks in our shipped ``tasks/`` folder and in users' include paths.

The YAML files are read directly (``include:`` merged, ``!function`` kept as text) instead of
through lmms-eval's TaskManager, whose import alone takes seconds: listing stays instant.
The rules follow lmms-eval 0.7.3: every ``*.yaml`` under a folder whose top-level ``task`` is a
string is a task; ``include`` files are merged first, the including file's keys win.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.tasks import TASKS_DIR

SHIPPED = "shipped"
LOCAL_BUILDERS = frozenset({"csv", "json", "parquet", "text", "pandas", "arrow"})
_IGNORED_DIRS = frozenset({"__pycache__", ".ipynb_checkpoints"})
_TOP_LEVEL_NAME = re.compile(r"""^(?:task|group):[ \t]*["']?([\w.\-]+)""", re.MULTILINE)


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads lmms-eval's ``!function module.name`` as the text ``module.name``."""


_Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


@dataclass(frozen=True)
class TaskEntry:
    """One task: what it measures, where its data comes from, and which file defines it."""

    name: str
    domain: str | None
    dataset_path: str | None
    dataset_name: str | None
    split: str | None
    data_files: Any
    metrics: tuple[str, ...]
    yaml_path: Path
    source: str

    @property
    def dataset(self) -> str:
        """``path[/config] (split)``; for local files, the builder and the files it reads."""
        if self.dataset_path in LOCAL_BUILDERS and self.data_files is not None:
            return f"{self.dataset_path}: {_files_text(self.data_files, self.yaml_path.parent)}"
        name = f"/{self.dataset_name}" if self.dataset_name else ""
        split = f" ({self.split})" if self.split else ""
        return f"{self.dataset_path}{name}{split}"

    def local_files(self) -> list[Path]:
        """The local files the task reads its documents from (relative ones found beside the
        YAML first, as lmms-eval finds them; URLs and glob patterns left out)."""
        if self.dataset_path not in LOCAL_BUILDERS or self.data_files is None:
            return []
        files = []

        def walk(value: Any) -> None:
            if isinstance(value, dict):
                for item in value.values():
                    walk(item)
            elif isinstance(value, list):
                for item in value:
                    walk(item)
            elif isinstance(value, str) and "://" not in value and not set("*?[") & set(value):
                beside = self.yaml_path.parent / value  # as lmms-eval: else the working folder
                files.append(
                    beside if beside.is_file() or not Path(value).is_file() else Path(value)
                )

        walk(self.data_files)
        return files

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "domain": self.domain,
            "dataset_path": self.dataset_path,
            "dataset_name": self.dataset_name,
            "split": self.split,
            "data_files": self.data_files,
            "metrics": list(self.metrics),
            "folder": str(self.yaml_path.parent),
            "yaml": str(self.yaml_path),
            "source": self.source,
        }


def _files_text(data_files: Any, folder: Path) -> str:
    """Data files as short text: paths inside the task's folder relative to it."""
    if isinstance(data_files, dict):
        return ", ".join(f"{k}={_files_text(v, folder)}" for k, v in data_files.items())
    if isinstance(data_files, list):
        return ", ".join(_files_text(v, folder) for v in data_files)
    path = Path(str(data_files))
    return str(path.relative_to(folder)) if path.is_relative_to(folder) else str(data_files)


def read_task_config(yaml_path: str | Path) -> dict:
    """A task YAML with its ``include`` files merged as lmms-eval merges them."""
    yaml_path = Path(yaml_path)
    try:
        config = yaml.load(yaml_path.read_text(), Loader=_Loader) or {}
    except (OSError, yaml.YAMLError) as exc:
        first = " ".join(str(exc).split())
        raise MMNeuronError(f"cannot read task file {yaml_path}: {first}") from None
    if not isinstance(config, dict):
        raise MMNeuronError(f"task file {yaml_path} does not hold a YAML mapping")
    includes = config.pop("include", None)
    if includes is None:
        return _resolve_data_files(config, yaml_path.parent)
    merged: dict = {}
    # lmms-eval merges the list from its end, so the first file listed wins among includes.
    for include in reversed([includes] if isinstance(includes, str) else list(includes)):
        path = Path(include) if os.path.isfile(include) else yaml_path.parent / include
        merged.update(read_task_config(path))
    merged.update(config)
    return _resolve_data_files(merged, yaml_path.parent)


def _resolve_data_files(config: dict, folder: Path) -> dict:
    """Relative local ``data_files`` that exist resolve against the YAML's folder (lmms-eval)."""
    kwargs = config.get("dataset_kwargs")
    if config.get("dataset_path") not in LOCAL_BUILDERS or not isinstance(kwargs, dict):
        return config

    def resolve(value):
        if isinstance(value, dict):
            return {key: resolve(item) for key, item in value.items()}
        if isinstance(value, list):
            return [resolve(item) for item in value]
        if isinstance(value, str) and value and not os.path.isabs(value):
            if "://" not in value and (folder / value).is_file():
                return str(folder / value)
        return value

    if "data_files" in kwargs:
        config = {
            **config,
            "dataset_kwargs": {**kwargs, "data_files": resolve(kwargs["data_files"])},
        }
    return config


def _entry(yaml_path: Path, config: dict, source: str) -> TaskEntry:
    metadata = config.get("metadata")
    domain = metadata.get("domain") if isinstance(metadata, dict) else None
    kwargs = config.get("dataset_kwargs")
    metrics = tuple(
        str(m["metric"]) for m in config.get("metric_list") or [] if isinstance(m, dict)
    )
    return TaskEntry(
        name=config["task"],
        domain=None if domain is None else str(domain),
        dataset_path=config.get("dataset_path"),
        dataset_name=config.get("dataset_name"),
        split=config.get("test_split") or config.get("validation_split"),
        data_files=kwargs.get("data_files") if isinstance(kwargs, dict) else None,
        metrics=metrics,
        yaml_path=yaml_path,
        source=source,
    )


def tasks_in(folder: str | Path, source: str) -> list[TaskEntry]:
    """Every task defined under ``folder`` (recursively), in path order."""
    entries = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in _IGNORED_DIRS)
        for name in sorted(files):
            if name.endswith(".yaml"):
                path = Path(root) / name
                config = read_task_config(path)
                if isinstance(config.get("task"), str):
                    entries.append(_entry(path, config, source))
    return entries


def index_tasks(include_paths: list[str] | tuple[str, ...] = ()) -> list[TaskEntry]:
    """Our shipped tasks, then those of each include path (a missing path is an error)."""
    for path in include_paths:
        if not os.path.isdir(path):
            raise MMNeuronError(f"include path {path!r} is not a directory")
    entries = tasks_in(TASKS_DIR, SHIPPED)
    for path in include_paths:
        entries += tasks_in(path, str(path))
    return entries


def check_data_files(names: Sequence[str], include_paths: Sequence[str] = ()) -> None:
    """Refuse, naming the task and the file, a task of ``names`` (ours or an include path's)
    whose local data file does not exist (lmms-eval would fail after retrying)."""
    wanted = set(names)
    for entry in index_tasks(list(include_paths)):
        if entry.name in wanted:
            for path in entry.local_files():
                if not path.is_file():
                    raise MMNeuronError(
                        f"task {entry.name!r}: its data file {path} does not exist "
                        f"({entry.yaml_path})"
                    )


def task_files(include_paths: Sequence[str]) -> list[Path]:
    """The YAML and local data files of every task in ``include_paths`` (inputs that no output
    may overwrite)."""
    entries = index_tasks(list(include_paths))
    return [p for e in entries if e.source != SHIPPED for p in (e.yaml_path, *e.local_files())]


def lmms_eval_task_names() -> set[str]:
    """Task and group names shipped with lmms-eval, by a text scan of its YAML files.

    lmms-eval silently prefers its own task over an include path's task of the same name;
    scanning the files for top-level ``task:`` / ``group:`` lines takes a fraction of a second,
    where indexing them through lmms-eval takes several.
    """
    import importlib.util

    spec = importlib.util.find_spec("lmms_eval")
    if spec is None or spec.origin is None:
        return set()
    names: set[str] = set()
    for root, _, files in os.walk(Path(spec.origin).parent / "tasks"):
        for name in files:
            if name.endswith(".yaml"):
                text = (Path(root) / name).read_text(errors="replace")
                names.update(_TOP_LEVEL_NAME.findall(text))
    return names


def name_problems(entries: list[TaskEntry]) -> list[str]:
    """One line per task name defined twice, or already taken by a task shipped with lmms-eval."""
    problems = []
    by_name: dict[str, list[TaskEntry]] = {}
    for entry in entries:
        by_name.setdefault(entry.name, []).append(entry)
    for name, same in by_name.items():
        if len(same) > 1:
            where = ", ".join(str(e.yaml_path) for e in same)
            problems.append(f"task {name!r} is defined {len(same)} times ({where}); rename one")
    taken = lmms_eval_task_names()
    for name, same in by_name.items():
        if name in taken:
            problems.append(
                f"task {name!r} ({same[0].yaml_path}) has the name of a task shipped with "
                "lmms-eval, which lmms-eval uses instead; rename it"
            )
    return problems
