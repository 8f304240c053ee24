"""Outputs written beside the results: JSON and CSV files (each written atomically), and the
reference an output keeps to every input file it came from."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from mmneuron_bench.formats.atomic import atomic_write
from mmneuron_bench.formats.common import sha256_file


def write_json(path: Path, data: object, default: Callable[[Any], Any] | None = None) -> None:
    """Indented JSON, atomically. Strict (no NaN or infinity) unless ``default`` is given, which
    turns what JSON cannot hold into something it can (lmms-eval's results)."""
    text = json.dumps(
        data, indent=2, allow_nan=default is not None, default=default, ensure_ascii=False
    )
    atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A CSV file with a header row, atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)

    atomic_write(path, write)


def file_reference(path: str | os.PathLike) -> dict[str, str]:
    """``{"path", "sha256"}`` of an input file, so an output says exactly what it came from."""
    return {"path": os.fspath(path), "sha256": sha256_file(path)}
