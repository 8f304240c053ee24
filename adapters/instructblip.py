"""InstructBLIP (``InstructBlipForConditionalGeneration``) with a decoder-only language model."""

from __future__ import annotations

from typing import Any

from mmneuron_bench import ModelAdapter, fc_mlp, gated_mlp, hookimpl, qformer_ffn

_QFORMER = "qformer.encoder.layer"
_LLM = "language_model.model.layers"


class InstructBlipAdapter(ModelAdapter):
    name = "instructblip"
    model_types = ("instructblip",)
    architectures = ("InstructBlipForConditionalGeneration",)
    model_class = "InstructBlipForConditionalGeneration"
    lmms_eval_model = "instructblip"
    components = (
        fc_mlp("vision", "vision", "vision_model.encoder.layers"),
        qformer_ffn("qformer_query", _QFORMER, part="intermediate_query", output="output_query"),
        qformer_ffn(
            "qformer_text", _QFORMER, part="intermediate", output="output", positions="qformer_text"
        ),
        gated_mlp("llm", "llm", _LLM),
    )
    # MMNeuron's InstructBLIP rows: "Vision Encoder" is the ViT alone, "Q-Former" both FFNs.
    paper_module_sets = {
        "none": "none",
        "vision": "vision",
        "connector": "connector",
        "llm": "llm",
        "all": "all",
    }
    decoder_layers = _LLM
    final_norm = "language_model.model.norm"
    lm_head = "language_model.lm_head"

    def format_prompt(self, processor: Any, question: str) -> str:
        """The processor inserts the query-token placeholders itself: the text is the question."""
        return question

    def paper_prompt(self, processor: Any, question: str) -> str:
        """The bare question: the processor puts the query tokens in front itself (the official
        code's literal '<image>' would add one more image token under transformers 5)."""
        return question

    def encode(self, processor: Any, images: list, texts: list[str]) -> dict:
        """As the processor builds them, but with the Q-Former's instruction right-padded.

        The processor pads the Q-Former text on the language model's side (left); the
        Q-Former's learned absolute positions would then depend on the batch's longest
        question, and so would every query activation.
        """
        inputs = super().encode(processor, images, texts)
        qformer = processor.qformer_tokenizer(
            texts, padding=True, padding_side="right", truncation=True, return_tensors="pt"
        )
        inputs["qformer_input_ids"] = qformer["input_ids"]
        inputs["qformer_attention_mask"] = qformer["attention_mask"]
        return inputs


@hookimpl
def mmneuron_register_adapters(register):
    register(InstructBlipAdapter())
