"""Atomic file output: a file users keep is either complete or absent, never half-written."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from safetensors import SafetensorError

from mmneuron_bench.errors import MMNeuronError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it onto `path` only if the block succeeds.

    The temporary file lives in the same directory so `os.replace` is an atomic rename; it is
    flushed to disk before the rename and removed if the block raises. A file that cannot be
    written (read-only folder, full disk) is a one-line :class:`MMNeuronError`.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError | SafetensorError):
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise MMNeuronError(
                f"{target}: cannot write ({' '.join(str(reason).split())})"
            ) from exc
        raise


def atomic_write(path: str | os.PathLike, write_fn: Callable[[Path], object]) -> None:
    """Call `write_fn(tmp_path)` to write the file, then atomically move it onto `path`."""
    with atomic_path(path) as tmp:
        write_fn(tmp)
