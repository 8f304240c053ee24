"""The synthetic splits on disk: generated on first use, then read from a parquet cache.

The cache lives under ``$MMNEURON_BENCH_CACHE`` (default ``$XDG_CACHE_HOME/mmneuron-bench``,
else ``~/.cache/mmneuron-bench``), in ``synthetic/<VERSION>/<domain>_<split>.parquet``.
Generation is deterministic, so a deleted cache comes back identical; a cached split whose
size or first and last samples differ from the generator's is generated again. Files are
written atomically, so two processes that generate the same split at once do no harm.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

from mmneuron_bench.formats.atomic import atomic_write
from mmneuron_bench.synthetic.generate import SPLIT_SIZES, VERSION, generate

if TYPE_CHECKING:
    import datasets

CACHE_ENV = "MMNEURON_BENCH_CACHE"


def cache_root() -> Path:
    """The package's cache folder (created on first write, not here)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mmneuron-bench"


def split_path(domain: str, split: str) -> Path:
    """Where one generated split is cached."""
    return cache_root() / "synthetic" / VERSION / f"{domain}_{split}.parquet"


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _features() -> datasets.Features:
    from datasets import Features, Image, Value

    return Features(
        {
            "domain": Value("string"),
            "split": Value("string"),
            "index": Value("int64"),
            "question_type": Value("int64"),
            "question": Value("string"),
            "answer": Value("string"),
            "image": Image(),
        }
    )


def _write_split(domain: str, split: str, path: Path) -> None:
    import pyarrow.parquet as pq
    from datasets import Dataset

    samples = [generate(domain, split, i) for i in range(SPLIT_SIZES[split])]
    columns = ("domain", "split", "index", "question_type", "question", "answer")
    rows = {name: [getattr(s, name) for s in samples] for name in columns}
    rows["image"] = [{"bytes": _png(s.image), "path": None} for s in samples]
    dataset = Dataset.from_dict(rows, features=_features())
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: pq.write_table(dataset.data.table, tmp))


def load_split(domain: str, split: str) -> datasets.Dataset:
    """Every sample of one split (image, question, answer, ...), generating it on first use."""
    import pyarrow.parquet as pq
    from datasets import Dataset

    path = split_path(domain, split)
    if path.exists():
        dataset = Dataset(pq.read_table(path))
        if _is_current(dataset, domain, split):
            return dataset
    _write_split(domain, split, path)
    return Dataset(pq.read_table(path))


def _is_current(dataset: datasets.Dataset, domain: str, split: str) -> bool:
    """Whether a cached split still holds what the generator draws (size, first and last
    sample): a generator changed without a VERSION bump must not serve stale samples."""
    if len(dataset) != SPLIT_SIZES[split]:
        return False
    for index in (0, len(dataset) - 1):
        row, sample = dataset[index], generate(domain, split, index)
        if (row["question"], row["answer"]) != (sample.question, sample.answer):
            return False
        if row["image"].convert("RGB").tobytes() != sample.image.convert("RGB").tobytes():
            return False
    return True
