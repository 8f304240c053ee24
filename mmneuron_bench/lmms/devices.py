"""Where the base lmms-eval model of the ``mmneuron`` model puts its model: dispatched over
devices by accelerate when ``device_map=auto`` (or ``device=auto``), with ``max_memory=``
(``0:20GiB;cpu:64GiB``) and ``offload_folder=``.

lmms-eval's models pass ``device_map`` on to ``from_pretrained`` but take no ``max_memory`` or
``offload_folder`` (several assert on arguments they do not name): both are taken out of the
arguments here and given to ``from_pretrained`` while the base loads
(:func:`~mmneuron_bench.models.placement.dispatch_defaults`). Under ``accelerate launch`` each
process dispatches over its own share of the GPUs (:meth:`Placement.for_process`).

Of lmms-eval 0.7.3's models, ``llava_hf`` and ``llama_vision`` run a dispatched model as it is;
the Qwen models and ``gemma3`` send their inputs to ``"cuda"`` (a GPU is needed); ``gemma3``
also moves the loaded model to one device, and ``instructblip`` takes no ``device_map``:
both are refused.
"""

from __future__ import annotations

import inspect
from typing import Any

from mmneuron_bench.distributed import Processes
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.models.placement import AUTO, Placement, parse_max_memory

# Bases that move the loaded model to one device, which undoes a dispatch (or fails on it).
MOVING_BASES = ("gemma3",)


def check_dispatchable(name: str, cls: type) -> None:
    """Refuse a base that cannot run a model dispatched over devices (``device_map=auto``)."""
    params = inspect.signature(cls.__init__).parameters
    if "device_map" not in params or name in MOVING_BASES:
        why = "moves the model to one device" if "device_map" in params else "takes no device_map"
        raise MMNeuronError(
            f"lmms-eval model {name!r} {why}, so it cannot run a model dispatched over devices "
            "(device_map=auto)"
        )


def base_placement(
    name: str, cls: type, args: dict[str, Any], processes: Processes
) -> tuple[dict[str, Any], Placement | None]:
    """The base's arguments for its placement, and the placement when it is dispatched
    (None: one device, which the base chooses from ``device``/``device_map`` as usual)."""
    out = dict(args)
    max_memory = out.pop("max_memory", None)
    folder = out.pop("offload_folder", None)
    if AUTO not in (out.get("device"), out.get("device_map")):
        if max_memory is not None or folder is not None:
            raise MMNeuronError("max_memory= and offload_folder= need device_map=auto")
        return out, None
    check_dispatchable(name, cls)
    params = inspect.signature(cls.__init__).parameters
    if isinstance(max_memory, str):
        max_memory = parse_max_memory(max_memory)
    placement = Placement(AUTO, max_memory, None if folder is None else str(folder))
    placement = placement.for_process(processes)
    out["device_map"] = AUTO
    if "device" in params:  # where the base sends its inputs
        out["device"] = placement.main_device()
    else:
        out.pop("device", None)
    return out, placement
