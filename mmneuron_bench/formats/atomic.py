"""Atomic file output: a file users keep is either complete or absent, never half-written.

A command that writes several files wraps the writing in :func:`all_or_nothing`: the files
appear together when the block ends, and none of them when it fails.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path

from safetensors import SafetensorError

from mmneuron_bench.errors import MMNeuronError

# (temporary file, target) pairs written inside the innermost all_or_nothing block.
_PENDING: ContextVar[list[tuple[Path, Path]] | None] = ContextVar("pending", default=None)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it onto `path` only if the block succeeds.

    The temporary file lives in the same directory so `os.replace` is an atomic rename; it is
    flushed to disk before the rename and removed if the block raises. A file that cannot be
    written (read-only folder, full disk) is a one-line :class:`MMNeuronError`. Inside an
    :func:`all_or_nothing` block the rename waits for the end of that block.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    pending = _PENDING.get()
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if pending is None:
            os.replace(tmp, target)
        else:
            pending.append((tmp, target))
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError | SafetensorError):
            raise _write_error(target, exc) from exc
        raise


@contextlib.contextmanager
def all_or_nothing() -> Iterator[None]:
    """Files written atomically inside the block are moved into place together when it ends;
    if it raises, none of them is (their temporary files are removed). Nested blocks hand
    their files to the outer one."""
    pending: list[tuple[Path, Path]] = []
    token = _PENDING.set(pending)
    try:
        yield
    except BaseException:
        _remove(pending)
        raise
    finally:
        _PENDING.reset(token)
    outer = _PENDING.get()
    if outer is not None:
        outer.extend(pending)
        return
    for i, (tmp, target) in enumerate(pending):
        try:
            os.replace(tmp, target)
        except OSError as exc:
            _remove(pending[i:])
            raise _write_error(target, exc) from exc


def _remove(pending: list[tuple[Path, Path]]) -> None:
    for tmp, _ in pending:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _write_error(target: Path, exc: OSError | SafetensorError) -> MMNeuronError:
    """A file that could not be written, as a one-line error naming it."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
    return MMNeuronError(f"{target}: cannot write ({' '.join(str(reason).split())})")


def atomic_write(path: str | os.PathLike, write_fn: Callable[[Path], object]) -> None:
    """Call `write_fn(tmp_path)` to write the file, then atomically move it onto `path`."""
    with atomic_path(path) as tmp:
        write_fn(tmp)
