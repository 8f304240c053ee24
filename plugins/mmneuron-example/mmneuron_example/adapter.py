"""BLIP-2 (``Blip2ForConditionalGeneration``) with an OPT language model."""

from __future__ import annotations

from typing import Any

from mmneuron_bench import ModelAdapter, fc_mlp, hookimpl, qformer_ffn

_OPT = "language_model.model.decoder"


class Blip2Adapter(ModelAdapter):
    name = "blip2"
    model_types = ("blip-2",)
    architectures = ("Blip2ForConditionalGeneration",)
    model_class = "Blip2ForConditionalGeneration"
    lmms_eval_model = None  # lmms-eval 0.7.3 ships no BLIP-2 model
    components = (
        fc_mlp("vision", "vision", "vision_model.encoder.layers"),
        qformer_ffn(
            "qformer_query",
            "qformer.encoder.layer",
            part="intermediate_query",
            output="output_query",
        ),  # fmt: skip
        fc_mlp("llm", "llm", f"{_OPT}.layers", mlp="", positions="llm"),  # OPT: fc1/act/fc2
    )
    decoder_layers = f"{_OPT}.layers"
    final_norm = f"{_OPT}.final_layer_norm"
    lm_head = "language_model.lm_head"

    def format_prompt(self, processor: Any, question: str) -> str:
        """BLIP-2's VQA prompt; the processor puts the query-token placeholders in front itself."""
        return f"Question: {question} Answer:"


@hookimpl
def mmneuron_register_adapters(register):
    register(Blip2Adapter())
