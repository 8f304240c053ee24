"""mmneuron-bench: domain-specific neurons of multimodal LLMs (MMNeuron) on any lmms-eval task.

The public API for plugin authors and notebooks::

    from mmneuron_bench import ModelAdapter, fc_mlp, gated_mlp, projector_mlp, hookimpl
    from mmneuron_bench import load_model, ActivationStats, NeuronMask, Deactivation

    loaded = load_model("llava-hf/llava-v1.6-vicuna-7b-hf")
    components = loaded.adapter.resolve(loaded.model)
    with Deactivation(components, NeuronMask.load("llava.mask.safetensors"), domains="medical"):
        loaded.model.generate(**inputs)

Names are imported on first use, so ``import mmneuron_bench`` stays instant (lmms-eval loads
our model's manifest on every start).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.2.0"

_PUBLIC = {
    # plugins and adapters
    "hookimpl": "mmneuron_bench.plugins.hookspecs",
    "ModelAdapter": "mmneuron_bench.models.adapter",
    "ComponentSpec": "mmneuron_bench.models.components",
    "fc_mlp": "mmneuron_bench.models.components",
    "gated_mlp": "mmneuron_bench.models.components",
    "projector_mlp": "mmneuron_bench.models.components",
    "qformer_ffn": "mmneuron_bench.models.components",
    "load_model": "mmneuron_bench.models.loading",
    # files
    "ActivationStats": "mmneuron_bench.formats.stats",
    "NeuronMask": "mmneuron_bench.formats.mask",
    "WeightEdit": "mmneuron_bench.formats.edit",
    # interventions
    "Deactivation": "mmneuron_bench.interventions.mask",
    "Intervention": "mmneuron_bench.interventions.base",
    "InterventionKind": "mmneuron_bench.interventions.base",
}
__all__ = [
    "ActivationStats",
    "ComponentSpec",
    "Deactivation",
    "Intervention",
    "InterventionKind",
    "ModelAdapter",
    "NeuronMask",
    "WeightEdit",
    "__version__",
    "fc_mlp",
    "gated_mlp",
    "hookimpl",
    "load_model",
    "projector_mlp",
    "qformer_ffn",
]

if TYPE_CHECKING:
    from mmneuron_bench.formats.edit import WeightEdit
    from mmneuron_bench.formats.mask import NeuronMask
    from mmneuron_bench.formats.stats import ActivationStats
    from mmneuron_bench.interventions.base import Intervention, InterventionKind
    from mmneuron_bench.interventions.mask import Deactivation
    from mmneuron_bench.models.adapter import ModelAdapter
    from mmneuron_bench.models.components import (
        ComponentSpec,
        fc_mlp,
        gated_mlp,
        projector_mlp,
        qformer_ffn,
    )
    from mmneuron_bench.models.loading import load_model
    from mmneuron_bench.plugins.hookspecs import hookimpl


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
