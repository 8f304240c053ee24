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

    def build_inputs(self, processor: Any, images: list, questions: list[str]) -> dict:
        """As the processor builds them, but with the Q-Former's instruction right-padded.

        The processor pads the Q-Former text on the language model's side (left); the
        Q-Former's learned absolute positions would then depend on the batch's longest
        question, and so would every query activation.
        """
        inputs = super().build_inputs(processor, images, questions)
        texts = [self.format_prompt(processor, q) for q in questions]
        qformer = processor.qformer_tokenizer(
            texts, padding=True, padding_side="right", truncation=True, return_tensors="pt"
        )
        inputs["qformer_input_ids"] = qformer["input_ids"]
        inputs["qformer_attention_mask"] = qformer["attention_mask"]
        return inputs


@hookimpl
def mmneuron_register_adapters(register):
    register(InstructBlipAdapter())
