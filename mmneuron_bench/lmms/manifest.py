"""Registration of the ``mmneuron`` model with lmms-eval (entry-point group ``lmms_eval.models``).

lmms-eval 0.7.3's evaluator looks models up in its manifest registry only; ``@register_model``
alone is not seen there. The entry point names :func:`manifests`, which lmms-eval calls.
"""

from __future__ import annotations

MODEL_NAME = "mmneuron"
CLASS_PATH = "mmneuron_bench.lmms.model.MMNeuronLMM"


def manifests() -> list:
    """The manifest of the ``mmneuron`` model (a simple, non-chat lmms-eval model)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=MODEL_NAME, simple_class_path=CLASS_PATH)]
