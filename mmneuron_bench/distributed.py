"""Several processes under ``accelerate launch``: the share of the work each one takes, and the
results brought back together in the order one process would have produced them.

Every command that runs a model uses the same rule: the work is a list (documents, batches),
process ``r`` of ``W`` takes items ``r, r + W, r + 2W, ...`` (:meth:`Processes.take`), and
:meth:`Processes.in_order` gathers every process's results back into the list's order on
every process. What is computed from the gathered results (sums, means, tables) is then
computed exactly as in one process, so the files the main process writes are the same. Only
the main process (rank 0) writes files and prints.

Launched without ``accelerate launch`` (no ``WORLD_SIZE`` above 1), nothing is initialised and
every method is the identity of a single process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def launched_processes() -> int:
    """The number of processes of this launch (``WORLD_SIZE``; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Whether this is the process that writes and prints (rank 0, or the only one)."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class Processes:
    """This process's place among the launched ones (``rank`` of ``world``, ``local_rank`` of
    ``local_world`` on its node)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def take(self, items: Sequence[T]) -> list[T]:
        """This process's share of ``items``: every ``world``-th, starting at ``rank``."""
        return list(items[self.rank :: self.world])

    def in_order(self, mine: list[R]) -> list[R]:
        """Every process's results of :meth:`take`, interleaved back into the order of the
        items they came from; the same list on every process."""
        if self.world == 1:
            return list(mine)
        shares = self.all_gather(mine)
        out: list[R] = []
        for i in range(max(len(share) for share in shares)):
            out += [share[i] for share in shares if i < len(share)]
        return out

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(item) for item in items]``, each process computing its share."""
        return self.in_order([fn(item) for item in self.take(items)])

    def all_gather(self, value: Any) -> list[Any]:
        """Every process's ``value`` (picklable), by rank, on every process."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, value)
        return gathered

    def gather(self, value: Any) -> list[Any] | None:
        """Every process's ``value`` by rank on the main process (None on the others)."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        gathered: list[Any] | None = [None] * self.world if self.main else None
        dist.gather_object(value, gathered, dst=0)
        return gathered

    def wait(self) -> None:
        """Wait until every process has come here."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def device(self, device: str) -> str:
        """This process's device for ``--device``: with several processes, a CUDA device is
        this process's own GPU (``cuda:LOCAL_RANK``); anything else is kept."""
        if self.world > 1 and device.startswith("cuda"):
            return f"cuda:{self.local_rank}"
        return device


SINGLE = Processes()


def processes() -> Processes:
    """This process's place. Under ``accelerate launch`` the process group is initialised
    here (unless it is already): NCCL on GPUs, gloo on CPUs (``accelerate launch --cpu``)."""
    world = launched_processes()
    if world == 1:
        return SINGLE
    import torch
    import torch.distributed as dist
    from accelerate.utils import parse_flag_from_env

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        gpus = torch.cuda.is_available() and not parse_flag_from_env("ACCELERATE_USE_CPU")
        if gpus:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if gpus else "gloo")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return Processes(dist.get_rank(), dist.get_world_size(), local_rank, local_world)


def process_device(device: str) -> str:
    """:meth:`Processes.device` from the launcher's environment (no process group needed)."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return Processes(0, launched_processes(), local_rank).device(device)


@contextlib.contextmanager
def main_output_only() -> Iterator[None]:
    """Standard output of the processes other than the main one goes nowhere (errors, on
    standard error, still show)."""
    if is_main_process():
        yield
        return
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        yield


_LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")


@contextlib.contextmanager
def one_process_view() -> Iterator[None]:
    """While the block runs, the launcher's ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and
    ``LOCAL_WORLD_SIZE`` are unset: code that reads them sees a single process.

    lmms-eval's models and evaluator read them (an ``Accelerator`` built here is one of a
    single process, and the evaluator splits no documents). The ``mmneuron`` model run by this
    project's commands splits its requests itself and gathers the answers through the process
    group initialised by :func:`processes`, so every process builds every request and computes
    the same results.
    """
    saved = {name: os.environ.pop(name) for name in _LAUNCH_VARIABLES if name in os.environ}
    try:
        yield
    finally:
        for name in _LAUNCH_VARIABLES:
            os.environ.pop(name, None)
        os.environ.update(saved)
