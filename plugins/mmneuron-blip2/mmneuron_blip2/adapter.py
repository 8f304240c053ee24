"""BLIP-2 (``Blip2ForConditionalGeneration``) with an OPT language model."""

from __future__ import annotations

from typing import Any

from mmneuron_bench.adapter import ComponentSpec, ModelAdapter
from mmneuron_bench.hookspecs import hookimpl

_VISION = "vision_model.encoder.layers"
_QFORMER = "qformer.encoder.layer"
_OPT = "language_model.model.decoder"
_LLM = _OPT + ".layers"


class Blip2Adapter(ModelAdapter):
    name = "blip2"
    model_types = ("blip-2",)
    architectures = ("Blip2ForConditionalGeneration",)
    model_class = "Blip2ForConditionalGeneration"
    lmms_eval_model = None  # lmms-eval 0.7.3 ships no BLIP-2 model
    components = (
        ComponentSpec(
            "vision",
            "vision",
            _VISION + ".{i}.mlp.activation_fn",
            _VISION + ".{i}.mlp.fc1",
            _VISION,
        ),
        ComponentSpec(
            "qformer_query",
            "connector",
            _QFORMER + ".{i}.intermediate_query.intermediate_act_fn",
            _QFORMER + ".{i}.intermediate_query.dense",
            _QFORMER,
        ),
        ComponentSpec("llm", "llm", _LLM + ".{i}.activation_fn", _LLM + ".{i}.fc1", _LLM, "llm"),
    )
    decoder_layers = _LLM
    final_norm = _OPT + ".final_layer_norm"
    lm_head = "language_model.lm_head"

    def format_prompt(self, processor: Any, question: str) -> str:
        """BLIP-2's VQA prompt; the processor puts the query-token placeholders in front itself."""
        return f"Question: {question} Answer:"


@hookimpl
def mmneuron_register_adapters(register):
    register(Blip2Adapter())
