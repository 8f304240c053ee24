"""``scale``: an example intervention kind that multiplies a mask's neurons by a factor.

``scale=FILE`` (a ``*.mask.safetensors``) with ``scale_factor=F`` (default 2) multiplies the
activations of the mask's neurons (all of its domains together) by ``F`` on every position:
``F > 1`` amplifies them, ``0 < F < 1`` dampens them, ``1`` changes nothing. Usable as
``mmneuron-bench run --intervention scale=FILE --intervention scale_factor=3`` and as
``--model_args ...,scale=FILE,scale_factor=3`` of lmms-eval's ``mmneuron`` model.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from mmneuron_bench import Intervention, InterventionKind, NeuronMask, hookimpl


class Scaling(Intervention):
    kind = "scale"

    def __init__(self, mask: NeuronMask, factor: float, path: str | None = None):
        self.mask = mask
        self.factor = factor
        self.path = path
        self.hooks: list[tuple[torch.nn.Module, torch.Tensor]] = []

    def recorded_models(self) -> dict[str, dict]:
        # Compared with the model before attach: a mask of another model is refused.
        return {"the scale mask": self.mask.model}

    def attach(self, target) -> None:
        components = {c.name: c for c in target.components}
        self.mask.check_matches({name: c.info for name, c in components.items()})
        for name, selected in self.mask.select("all").items():
            for layer, module in enumerate(components[name].modules):
                index = selected[layer].nonzero().flatten()
                if index.numel():
                    self.hooks.append((module, index))

    @contextlib.contextmanager
    def for_task(self, task: str, metadata: Mapping[str, Any]) -> Iterator[None]:
        def scale(index: torch.Tensor):
            def hook(_module, _args, output):
                factors = torch.ones(output.shape[-1], dtype=output.dtype, device=output.device)
                factors[index.to(output.device)] = self.factor
                return output * factors

            return hook

        handles = [module.register_forward_hook(scale(index)) for module, index in self.hooks]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def describe(self) -> dict:
        neurons = sum(int(index.numel()) for _, index in self.hooks)
        return {"path": self.path, "factor": self.factor, "neurons": neurons}


def build(args: dict[str, Any]) -> Scaling:
    mask = args["scale"]
    path = os.fspath(mask) if isinstance(mask, (str, os.PathLike)) else None
    if path is not None:
        mask = NeuronMask.load(path)
    return Scaling(mask, float(args.get("scale_factor", 2.0)), path)


SCALE = InterventionKind(
    "scale", ("scale", "scale_factor"), build, "multiply a mask's neurons by scale_factor"
)


@hookimpl
def mmneuron_register_interventions(register):
    register(SCALE)
