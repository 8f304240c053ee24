"""InstructBLIP (``InstructBlipForConditionalGeneration``) with a decoder-only language model."""

from __future__ import annotations

from typing import Any

from mmneuron_bench.adapter import ComponentSpec, ModelAdapter
from mmneuron_bench.hookspecs import hookimpl

_VISION = "vision_model.encoder.layers"
_QFORMER = "qformer.encoder.layer"
_LLM = "language_model.model.layers"


class InstructBlipAdapter(ModelAdapter):
    name = "instructblip"
    model_types = ("instructblip",)
    architectures = ("InstructBlipForConditionalGeneration",)
    model_class = "InstructBlipForConditionalGeneration"
    lmms_eval_model = "instructblip"
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
        ComponentSpec(
            "qformer_text",
            "connector",
            _QFORMER + ".{i}.intermediate.intermediate_act_fn",
            _QFORMER + ".{i}.intermediate.dense",
            _QFORMER,
            "qformer_text",
        ),
        ComponentSpec(
            "llm", "llm", _LLM + ".{i}.mlp.act_fn", _LLM + ".{i}.mlp.gate_proj", _LLM, "llm"
        ),
    )
    decoder_layers = _LLM
    final_norm = "language_model.model.norm"
    lm_head = "language_model.lm_head"

    def format_prompt(self, processor: Any, question: str) -> str:
        """The processor inserts the query-token placeholders itself: the text is the question."""
        return question


@hookimpl
def mmneuron_register_adapters(register):
    register(InstructBlipAdapter())
