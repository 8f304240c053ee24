"""BLIP-2 (``Blip2ForConditionalGeneration``) with a decoder-only language model.

- Components: the ViT (``vision``), the Q-Former's query feed-forward blocks
  (``qformer_query``; BLIP-2 builds no text feed-forward blocks) and the language model's MLP
  (``llm``), whose paths depend on the language model the config names: OPT
  (``fc1 -> activation_fn -> fc2`` directly in each decoder layer, as in every public
  checkpoint) or a Llama-style gated MLP. Flan-T5 checkpoints (an encoder-decoder language
  model) are refused.
- OPT runs its MLP on the flattened ``[batch * positions, N]`` rows: counting, masking and
  the capture of the last position view it as ``[batch, positions, N]``.
- The processor puts the ``num_query_tokens`` image placeholders in front of the already padded
  text (``[image x Q][pad...][BOS][text]``); the padding-invariant position ids skip the
  padding, which a RoPE language model needs.
- The real checkpoints' tokenizers pad on the right, which breaks batched generation: inputs
  are built left-padded.
- ``generate`` returns the prompt before the answer (callers slice it off).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from mmneuron_bench import ComponentSpec, ModelAdapter, fc_mlp, gated_mlp, hookimpl, qformer_ffn
from mmneuron_bench.errors import AdapterError
from mmneuron_bench.models.adapter import (
    Component,
    LanguageModelParts,
    get_module,
)

_VISION = fc_mlp("vision", "vision", "vision_model.encoder.layers")
_QUERY = qformer_ffn(
    "qformer_query", "qformer.encoder.layer", part="intermediate_query", output="output_query"
)
_OPT = "language_model.model.decoder"
_LLAMA = "language_model.model"


class Blip2Adapter(ModelAdapter):
    name = "blip2"
    model_types = ("blip-2",)
    architectures = ("Blip2ForConditionalGeneration",)
    model_class = "Blip2ForConditionalGeneration"
    lmms_eval_model = None  # lmms-eval 0.7.3 ships no BLIP-2 model
    # OPT, as in every public checkpoint; a Llama-style language model: see _llm_parts.
    components = (_VISION, _QUERY, fc_mlp("llm", "llm", f"{_OPT}.layers", mlp="", positions="llm"))
    decoder_layers = f"{_OPT}.layers"
    final_norm = f"{_OPT}.final_layer_norm"
    lm_head = "language_model.lm_head"

    def refusal(self, config: Any) -> str | None:
        """A Flan-T5 language model, or an OPT without a final norm before the LM head."""
        if not self.handles(config):
            return super().refusal(config)
        if not getattr(config, "use_decoder_only_language_model", True):
            return (
                "BLIP-2 with an encoder-decoder language model (Flan-T5) is not supported, "
                "only decoder-only ones (OPT, Llama-style)"
            )
        text = config.text_config
        if text.model_type == "opt" and (
            not text.do_layer_norm_before or text.word_embed_proj_dim != text.hidden_size
        ):
            return (
                "an OPT without a final layer norm or with a projection before the LM head "
                "(OPT-350m style) is not supported"
            )
        return super().refusal(config)

    def _llm_parts(self, config: Any) -> tuple[ComponentSpec, str, str]:
        """The ``llm`` component, decoder layers and final norm of the config's language model."""
        reason = self.refusal(config)
        if reason:
            raise AdapterError(f"adapter 'blip2': {reason}")
        if config.text_config.model_type != "opt":
            llm = gated_mlp("llm", "llm", f"{_LLAMA}.layers")
            return llm, f"{_LLAMA}.layers", f"{_LLAMA}.norm"
        return self.components[2], self.decoder_layers, self.final_norm

    def resolve(self, model: nn.Module) -> list[Component]:
        llm, _, _ = self._llm_parts(model.config)
        return [self._resolve_one(model, spec) for spec in (_VISION, _QUERY, llm)]

    def language_model(self, model: nn.Module) -> LanguageModelParts:
        _, layers, norm = self._llm_parts(model.config)
        return LanguageModelParts(
            get_module(model, layers, self.name, "decoder layers"),
            get_module(model, norm, self.name, "final norm"),
            get_module(model, self.lm_head, self.name, "LM head"),
        )

    def format_prompt(self, processor: Any, question: str) -> str:
        """BLIP-2's VQA prompt; the processor puts the query-token placeholders in front itself."""
        return f"Question: {question} Answer:"

    def paper_prompt(self, processor: Any, question: str) -> str:
        """The bare question (the processor puts the query-token placeholders in front)."""
        return question

    def encode(self, processor: Any, images: list, texts: list[str]) -> dict:
        """Left-padded whatever the tokenizer's default (the real ones pad on the right)."""
        return processor(
            images=images, text=texts, padding=True, padding_side="left", return_tensors="pt"
        )


@hookimpl
def mmneuron_register_adapters(register):
    register(Blip2Adapter())
