"""What the terminal shows: our own progress bars and tables, the libraries' output kept out.

By default a command shows one rich progress bar per long step (with a rate and an ETA) and
its own tables. The logs, warnings and progress bars of lmms-eval, transformers, datasets,
huggingface_hub and accelerate are kept out, unless ``--verbose`` lets them through.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from mmneuron_bench.tables import Table, fitted

# Python loggers of the libraries, and the environment variables read when they are imported.
_LOGGERS = ("transformers", "datasets", "huggingface_hub", "accelerate", "torch", "filelock")
_ENVIRONMENT = {
    "TRANSFORMERS_VERBOSITY": "error",
    "DATASETS_VERBOSITY": "error",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}
_quiet = False


@contextlib.contextmanager
def quiet_libraries() -> Iterator[_Release]:
    """Keep the libraries' logs, warnings and progress bars out of the terminal in the block.

    Yields an object whose ``release()`` lets them through again (``--verbose``). Nested
    blocks change nothing. Everything is restored when the outermost block ends.
    """
    global _quiet
    if _quiet:
        yield _Release(lambda: None)
        return
    with contextlib.ExitStack() as restore:
        _quiet = True
        restore.callback(_set_unquiet)
        restore.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        for name, value in _ENVIRONMENT.items():
            restore.callback(_restore_env, name, os.environ.get(name))
            os.environ[name] = value
        for name in _LOGGERS:
            logger = logging.getLogger(name)
            restore.callback(logger.setLevel, logger.level)
            logger.setLevel(logging.ERROR)
        restore.callback(_tqdm_disabled())
        restore.callback(_lmms_eval_disabled())
        yield _Release(restore.close)


class _Release:
    def __init__(self, release):
        self.release = release


def _set_unquiet() -> None:
    global _quiet
    _quiet = False


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _tqdm_disabled():
    """Force ``disable=True`` on every tqdm bar (lmms-eval passes ``disable=False`` itself, so
    tqdm's ``TQDM_DISABLE`` does not reach its bars); returns the undo."""
    from tqdm import std

    original = std.tqdm.__dict__["__init__"]

    def init(self, *args, **kwargs):
        kwargs["disable"] = True
        original.__get__(self, type(self))(*args, **kwargs)

    std.tqdm.__init__ = init
    return lambda: setattr(std.tqdm, "__init__", original)


def _lmms_eval_disabled():
    """Silence lmms-eval's loguru messages (all of its modules); returns the undo."""
    from loguru import logger

    logger.disable("lmms_eval")
    return lambda: logger.enable("lmms_eval")


class RateColumn(ProgressColumn):
    """Items per second, e.g. ``12.3 samples/s`` (``-`` until there is a rate)."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text(f"- {self.unit}/s")
        return Text(f"{speed:.3g} {self.unit}/s" if speed < 100 else f"{speed:.0f} {self.unit}/s")


def progress(unit: str = "samples", disable: bool = False) -> Progress:
    """A progress bar on stderr: description, bar, done/total, rate and time remaining (shown
    by the main process only, under ``accelerate launch``)."""
    from mmneuron_bench.distributed import is_main_process

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=disable or not is_main_process(),
    )


def print_table(table: Table, console: Console | None = None) -> None:
    """Print ``table`` so that it fits the terminal: never a cut cell (see :func:`fitted`)."""
    console = console or Console()
    for part in fitted(table, console.width):
        console.print(part)
