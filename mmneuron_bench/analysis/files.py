"""Writing analysis outputs: JSON and CSV files, each written atomically."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from mmneuron_bench.atomic import atomic_write
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.mask_file import sha256_file


def output_dir(path: str | os.PathLike) -> Path:
    """The output folder, created if needed; a path that is a file is a one-line error."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise MMNeuronError(f"{out}: output path is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MMNeuronError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    return out


def write_json(path: Path, data: object) -> None:
    """Strict JSON (no NaN or infinity), indented, atomically."""
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A CSV file with a header row, atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)

    atomic_write(path, write)


def file_reference(path: str | os.PathLike) -> dict[str, str]:
    """``{"path", "sha256"}`` of an input file, so an output says exactly what it came from."""
    return {"path": os.fspath(path), "sha256": sha256_file(path)}
