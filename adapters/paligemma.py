"""PaliGemma and PaliGemma 2 (``PaliGemmaForConditionalGeneration``): SigLIP tower, one Linear
connector without neurons, Gemma (2) LLM with GeGLU MLPs.

- Connector: ``model.multi_modal_projector.linear``, a single ``nn.Linear``: no neurons.
- LLM: ``act_fn`` is ``gelu_pytorch_tanh``; ``activation > 0`` is exact (GELU-tanh is
  positive exactly where its input is).
- Prompt: ``<image>`` x 256 + ``<bos>`` + prefix + ``"\\n"``, built by the processor from
  ``"<image>" + question`` (no chat template; the pretrained checkpoints take task prefixes).
- Prefix-LM attention: ``token_type_ids`` are 0 over the whole prompt (one bidirectional
  block), 1 over a suffix (causal); they stay in every forward, and text appended after the
  prompt (a loglikelihood continuation) gets 1, as ``generate`` gives new tokens.
- Positions are 1-based (``arange + 1``); a padded sample gets ``cumsum(mask)``.
- The processor always returns ``labels`` (-100 over the prompt); a forward with them computes
  a loss, and fails with ``logits_to_keep``: they are dropped.
- The logits are soft-capped, ``c * tanh(lm_head(norm(h)) / c)`` with the text config's
  ``final_logit_softcapping``; the logit lens applies the same cap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mmneuron_bench import ModelAdapter, fc_mlp, gated_mlp, hookimpl

_LLM = "model.language_model.layers"


class PaliGemmaAdapter(ModelAdapter):
    name = "paligemma"
    model_types = ("paligemma",)
    architectures = ("PaliGemmaForConditionalGeneration",)
    model_class = "PaliGemmaForConditionalGeneration"
    lmms_eval_model = None
    lmms_eval_missing = (
        "lmms-eval 0.7.3 has no PaliGemma model, and its generic 'huggingface' model loads "
        "AutoModel, a PaliGemmaModel without LM head; record, select and the analyses work"
    )
    components = (
        fc_mlp("vision", "vision", "model.vision_tower.encoder.layers"),
        gated_mlp("llm", "llm", _LLM),
    )
    no_neurons = {
        "connector": "model.multi_modal_projector is a single Linear, without an activation "
        "function"
    }
    decoder_layers = _LLM
    final_norm = "model.language_model.norm"
    lm_head = "lm_head"
    appended_token_type = 1

    def position_ids(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """``cumsum(mask)``: the model's own 1-based positions, skipping padding."""
        return inputs["attention_mask"].long().cumsum(-1)

    def format_prompt(self, processor: Any, question: str) -> str:
        """``<image>`` then the question: the processor adds ``<bos>`` and the closing
        ``"\\n"`` (PaliGemma's prefix layout)."""
        return f"{processor.image_token}{question}"

    def encode(self, processor: Any, images: list, texts: list[str]) -> dict:
        """The processor's inputs without ``labels`` (a forward would compute a loss)."""
        inputs = super().encode(processor, images, texts)
        inputs.pop("labels", None)
        return inputs

    def finish_logits(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The forward's soft-capping ``c * tanh(logits / c)``, where the config sets ``c``."""
        cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
        if cap is None:
            return None
        return lambda logits: torch.tanh(logits / cap) * cap


@hookimpl
def mmneuron_register_adapters(register):
    register(PaliGemmaAdapter())
