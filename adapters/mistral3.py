"""Mistral 3 (``Mistral3ForConditionalGeneration``): Pixtral vision tower, patch-merging
projector, Mistral language model.

- The Pixtral tower's MLP is gated (``feed_forward.gate_proj -> act_fn``, ``* up_proj``,
  ``down_proj``): its neurons are ``act_fn(gate_proj(x))``.
- The tower cuts each image back to its own patches and runs all images of a batch as one
  sequence (``[1, sum of patches, N]``, block-diagonal attention); the projector's activation
  is 2-D (``[sum of merged patches, N]``). Every row is a real patch, whatever the batch.
- ``[IMG]`` positions receive the image features and are the image tokens; ``[IMG_BREAK]``
  and ``[IMG_END]`` are learned text embeddings and count as text.
- The chat template writes the BOS token; the processor would add a second one.
- Mistral 3 checkpoints whose language model is not a Mistral-style decoder (another module
  tree) fail when their paths are resolved, naming the missing module.
"""

from __future__ import annotations

from typing import Any

from mmneuron_bench import gated_mlp, hookimpl, projector_mlp
from mmneuron_bench.adapters.llava import LlavaAdapter
from mmneuron_bench.models.adapter import starts_with_bos

_LLM = "model.language_model.layers"


class Mistral3Adapter(LlavaAdapter):
    """LLaVA's structure (and its rule for unused vision layers: ``vision_feature_layer``)."""

    name = "mistral3"
    model_types = ("mistral3",)
    architectures = ("Mistral3ForConditionalGeneration",)
    model_class = "Mistral3ForConditionalGeneration"
    lmms_eval_model = "mistral3_vl"
    components = (
        gated_mlp(
            "vision",
            "vision",
            "model.vision_tower.transformer.layers",
            mlp="feed_forward",
            positions="all",
        ),
        projector_mlp(),
        gated_mlp("llm", "llm", _LLM),
    )
    decoder_layers = _LLM
    final_norm = "model.language_model.norm"
    lm_head = "lm_head"

    def format_prompt(self, processor: Any, question: str) -> str:
        """The chat template (it writes the BOS token); without one, the ``[INST]`` format
        lmms-eval's ``mistral3_vl`` uses."""
        if getattr(processor, "chat_template", None):
            return super().format_prompt(processor, question)
        bos = processor.tokenizer.bos_token or ""
        return f"{bos}[INST]{processor.image_token}\n{question}[/INST]"

    def encode(self, processor: Any, images: list, texts: list[str]) -> dict:
        """Left-padded, without a second BOS where the prompt has one."""
        return processor(
            images=images,
            text=texts,
            padding=True,
            padding_side="left",
            add_special_tokens=not starts_with_bos(processor, texts),
            return_tensors="pt",
        )


@hookimpl
def mmneuron_register_adapters(register):
    register(Mistral3Adapter())
