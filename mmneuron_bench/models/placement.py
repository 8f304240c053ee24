"""Where a model's weights live: one device, or dispatched by accelerate over the visible
devices (``--device auto``), with what does not fit offloaded to the CPU or the disk.

A dispatched model runs as loaded: accelerate's hooks move each layer's inputs to that layer's
device and bring offloaded weights in for the duration of its forward. What this project adds
stays correct on every shard: forward hooks see each activation on its layer's device (a mask
copies its neuron index there, a recorder counts there), inputs go to :func:`input_device`,
and weights read outside a forward (contribution scores, edits) go through :func:`weight`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmneuron_bench.distributed import Processes
from mmneuron_bench.errors import MMNeuronError

AUTO = "auto"
_NAMED_DEVICES = ("cpu", "disk", "mps")


def parse_max_memory(text: str) -> dict[int | str, int]:
    """``"0=2GiB,cpu=8GiB"`` (or ``"0:2GiB;cpu:8GiB"``, which fits in lmms-eval's model_args)
    -> ``{0: 2147483648, "cpu": 8589934592}``. Devices: GPU indices, ``cpu``, ``disk``,
    ``mps``; sizes in bytes or with a unit (``KiB``/``MiB``/``GiB``, ``KB``/``MB``/``GB``)."""
    from accelerate.utils import convert_file_size_to_int

    out: dict[int | str, int] = {}
    for part in filter(None, (p.strip() for p in re.split("[,;]", text))):
        found = re.fullmatch(r"([^=:]+?)\s*[=:]\s*(\S+)", part)
        if found is None:
            raise MMNeuronError(f"max memory {part!r} is not of the form DEVICE=SIZE (0=2GiB)")
        key, size = found.groups()
        device: int | str = int(key) if key.isdigit() else key.lower()
        if isinstance(device, str) and device not in _NAMED_DEVICES:
            raise MMNeuronError(
                f"max memory {part!r}: the device is a GPU index, cpu, disk or mps, not {key!r}"
            )
        try:
            out[device] = int(size) if size.isdigit() else convert_file_size_to_int(size)
        except ValueError:
            raise MMNeuronError(f"max memory {part!r}: {size!r} is not a size (2GiB)") from None
    if not out:
        raise MMNeuronError("max memory names no device (0=2GiB,cpu=8GiB)")
    return out


@dataclass(frozen=True)
class Placement:
    """One device (``cpu``, ``cuda:1``, ...) or ``auto``: dispatched by accelerate within
    ``max_memory`` (bytes per GPU index, ``cpu``, ``disk``; None: what is free), offloading
    to ``offload_folder`` what must go to the disk."""

    device: str = "cpu"
    max_memory: dict[int | str, int] | None = None
    offload_folder: str | None = None

    @property
    def dispatched(self) -> bool:
        return self.device == AUTO

    def for_process(self, processes: Processes) -> Placement:
        """This process's placement when several run: a CUDA device becomes the process's
        own GPU; ``auto`` gets the process's share of the node's GPUs (``N // processes``
        each, in order), a share of the free CPU memory unless ``max_memory`` says, and an
        offload folder of its own (``FOLDER/rank<r>``)."""
        if processes.world == 1:
            return self
        if not self.dispatched:
            return replace(self, device=processes.device(self.device))
        count = torch.cuda.device_count()
        per = count // processes.local_world
        if count and not per:
            raise MMNeuronError(
                f"--device auto: {processes.local_world} processes on a node with {count} "
                "GPUs; each process needs at least one"
            )
        share = range(processes.local_rank * per, (processes.local_rank + 1) * per)
        if self.max_memory is None:  # what is free (asking only this process's GPUs)
            import psutil

            memory = {gpu: torch.cuda.mem_get_info(gpu)[0] for gpu in share}
            memory["cpu"] = psutil.virtual_memory().available // processes.local_world
        else:
            memory = {k: v for k, v in self.max_memory.items() if not isinstance(k, int)}
            memory.update({k: v for k, v in self.max_memory.items() if k in share})
        folder = self.offload_folder
        if folder is not None:
            folder = str(Path(folder) / f"rank{processes.rank}")
        return replace(self, max_memory=memory, offload_folder=folder)

    def main_device(self) -> str:
        """Where inputs go: the device, or for ``auto`` the first GPU it may use (else cpu)."""
        if not self.dispatched:
            return self.device
        if self.max_memory is not None:
            gpus = sorted(k for k in self.max_memory if isinstance(k, int))
        else:
            gpus = list(range(torch.cuda.device_count()))
        return f"cuda:{gpus[0]}" if gpus else "cpu"

    def dispatch_kwargs(self) -> dict[str, Any]:
        """``from_pretrained``'s arguments for a dispatched model (``device_map="auto"``)."""
        out: dict[str, Any] = {"device_map": AUTO}
        if self.max_memory is not None:
            out["max_memory"] = dict(self.max_memory)
        if self.offload_folder is not None:
            out["offload_folder"] = self.offload_folder
        return out

    def load(self, cls: type, pretrained: str, dtype: Any) -> nn.Module:
        """``cls.from_pretrained`` on the device, or dispatched; in eval mode."""
        if self.dispatched:
            model = cls.from_pretrained(pretrained, dtype=dtype, **self.dispatch_kwargs())
        else:
            model = cls.from_pretrained(pretrained, dtype=dtype).to(self.device)
        return model.eval()


def placement_of(device: str | Placement) -> Placement:
    """A :class:`Placement` from a device name (``auto``: dispatched, within free memory)."""
    return device if isinstance(device, Placement) else Placement(str(device))


@contextlib.contextmanager
def dispatch_defaults(placement: Placement | None) -> Iterator[None]:
    """While the block runs, every ``from_pretrained(..., device_map="auto")`` that names no
    ``max_memory`` or ``offload_folder`` gets the placement's (lmms-eval's models pass
    ``device_map`` on, but not these). Nothing changes for None or a placement on one device."""
    from transformers import PreTrainedModel

    if placement is None or not placement.dispatched:
        yield
        return
    defaults = {k: v for k, v in placement.dispatch_kwargs().items() if k != "device_map"}
    original = PreTrainedModel.__dict__["from_pretrained"]

    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("device_map") == AUTO:
            kwargs = {**defaults, **kwargs}
        return original.__func__(cls, *args, **kwargs)

    PreTrainedModel.from_pretrained = classmethod(from_pretrained)
    try:
        yield
    finally:
        PreTrainedModel.from_pretrained = original


def input_device(model: nn.Module) -> torch.device:
    """Where the model's inputs go: the device of its parameters, or for a dispatched model
    accelerate's main device (the first GPU of its map, else the CPU), where offloaded
    layers run too."""
    device_map = getattr(model, "hf_device_map", None)
    if device_map:
        gpus = [d for d in device_map.values() if d not in ("cpu", "disk", "meta")]
        return torch.device(gpus[0]) if gpus else torch.device("cpu")
    return next(model.parameters()).device


def offloaded(module: nn.Module) -> bool:
    """Whether accelerate keeps ``module``'s weights off its device between forwards."""
    from accelerate.utils import has_offloaded_params

    return has_offloaded_params(module)


def weight(module: nn.Module) -> torch.Tensor:
    """``module.weight``, detached; for an offloaded module a copy brought to the device it
    runs on (the weights stay offloaded)."""
    if not offloaded(module):
        return module.weight.detach()
    from accelerate.utils import align_module_device

    with align_module_device(module):
        return module.weight.detach().clone()


class Weights(Sequence[torch.Tensor]):
    """The weights of ``modules``, each read by :func:`weight` when it is asked for, so that
    offloaded weights are brought in one module at a time."""

    def __init__(self, modules: Sequence[nn.Module]):
        self.modules = list(modules)

    def __len__(self) -> int:
        return len(self.modules)

    def __getitem__(self, index: int) -> torch.Tensor:  # type: ignore[override]
        return weight(self.modules[index])
