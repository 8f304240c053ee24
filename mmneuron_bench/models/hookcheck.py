"""Check that an adapter's hooks really fire: one forward with a counter on every layer."""

from __future__ import annotations

import torch
from PIL import Image

from mmneuron_bench.errors import AdapterError
from mmneuron_bench.models.adapter import Component, LoadedModel
from mmneuron_bench.models.hooks import forward_hooks
from mmneuron_bench.models.placement import input_device


def example_inputs(loaded: LoadedModel, batch: int = 1) -> dict:
    """A small batch of grey images and one question each, built by the model's processor."""
    images = [Image.new("RGB", (64, 64), (96 + 32 * i, 128, 160)) for i in range(batch)]
    questions = ["What is in the image?"] * batch
    inputs = loaded.adapter.build_inputs(loaded.processor, images, questions)
    return inputs.to(input_device(loaded.model))


def fired_layers(loaded: LoadedModel, components: list[Component], inputs: dict) -> dict:
    """Run one forward; return {component name: set of layer indices whose hook fired}."""
    fired: dict[str, set[int]] = {c.name: set() for c in components}

    def mark(name: str, layer: int):
        return lambda _module, _args, _output: fired[name].add(layer)

    with forward_hooks(
        (module, mark(c.name, layer)) for c in components for layer, module in enumerate(c.modules)
    ):
        with torch.no_grad():
            loaded.model(**loaded.adapter.forward_kwargs(inputs))
    return fired


def check_hooks_fire(loaded: LoadedModel, components: list[Component]) -> None:
    """Raise :class:`AdapterError` naming the first used layer whose hook never fired."""
    fired = fired_layers(loaded, components, example_inputs(loaded))
    for component in components:
        for layer in range(component.info.layers):
            if layer not in fired[component.name] and layer not in component.unused_layers:
                raise AdapterError(
                    f"adapter {loaded.adapter.name!r}: hook on '{component.module_path(layer)}' "
                    "never fired during a forward"
                )
