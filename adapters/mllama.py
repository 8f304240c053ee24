"""Llama 3.2 Vision (``MllamaForConditionalGeneration``): two vision encoders, a language model
that sees the image only through cross-attention layers.

- Components: the local (``vision_local``) and the global (``vision_global``) vision
  transformer are both ``vision``; the connector is one ``Linear`` (no neurons); ``llm`` is
  the MLP of every decoder layer, self-attention and cross-attention layers alike.
- The language model's sequence holds one ``<|image|>`` marker per image, an ordinary text
  embedding: there are no image tokens, so ``--token-scope image`` is refused and the marker
  counts as text.
- Vision rows: every image is cut into tiles and always padded to ``max_num_tiles``; each tile
  has ``(image_size / patch_size)**2 + 1`` rows (CLS first), padded to a multiple of 8. Only
  the rows of an image's own tiles, without the padding rows, are tokens
  (position kind ``vision_tiles``).
- A cross-attention layer runs its MLP on every row but multiplies the output by 0 on the rows
  that attend to no image (those before ``<|image|>``, and padding): only the other rows count
  in those layers (per-layer position kind ``llm@LAYER``). A text-only input skips the
  cross-attention layers altogether.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmneuron_bench import ModelAdapter, fc_mlp, gated_mlp, hookimpl
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.models.adapter import PAD, TEXT

_VISION = "model.vision_model"
_LLM = "model.language_model.layers"


class MllamaAdapter(ModelAdapter):
    name = "mllama"
    model_types = ("mllama",)
    architectures = ("MllamaForConditionalGeneration",)
    model_class = "MllamaForConditionalGeneration"
    lmms_eval_model = "llama_vision"
    components = (
        fc_mlp("vision_local", "vision", f"{_VISION}.transformer.layers", positions="vision_tiles"),
        fc_mlp(
            "vision_global",
            "vision",
            f"{_VISION}.global_transformer.layers",
            positions="vision_tiles",
        ),
        gated_mlp("llm", "llm", _LLM),
    )
    no_neurons = {
        "connector": "model.multi_modal_projector is a single Linear; the images enter the "
        "language model through its cross-attention layers"
    }
    decoder_layers = _LLM
    final_norm = "model.language_model.norm"
    lm_head = "lm_head"

    def check_token_scope(self, token_scope: str) -> None:
        """``image`` is refused: the language model's sequence holds no image tokens."""
        super().check_token_scope(token_scope)
        if token_scope == "image":
            raise MMNeuronError(
                "--token-scope image: Llama 3.2 Vision has no image tokens in its language "
                "model's sequence (images enter through cross-attention layers)"
            )

    def token_roles(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """TEXT everywhere but padding: the ``<|image|>`` marker is a text embedding."""
        roles = torch.full_like(inputs["input_ids"], TEXT)
        attention = inputs.get("attention_mask")
        if attention is not None:
            roles[attention == 0] = PAD
        return roles

    def positions(
        self, model: nn.Module, inputs: dict[str, torch.Tensor], token_scope: str = "all"
    ) -> dict[str, torch.Tensor | None]:
        """The base kinds, ``vision_tiles`` and one ``llm@LAYER`` per cross-attention layer."""
        kinds = super().positions(model, inputs, token_scope)
        if "aspect_ratio_mask" in inputs:
            kinds["vision_tiles"] = self._tile_rows(model, inputs["aspect_ratio_mask"])
        if "cross_attention_mask" in inputs:
            sees_image = inputs["cross_attention_mask"].flatten(2).bool().any(-1)
            for layer in model.config.text_config.cross_attention_layers:
                kinds[f"llm@{layer}"] = kinds["llm"] & sees_image.to(kinds["llm"].device)
        return kinds

    @staticmethod
    def _tile_rows(model: nn.Module, aspect_ratio_mask: torch.Tensor) -> torch.Tensor:
        """Real rows of the vision encoders, flattened as ``[images * tiles * rows]``."""
        vision = model.config.vision_config
        rows = (vision.image_size // vision.patch_size) ** 2 + 1
        padded = rows + (8 - rows % 8) % 8
        tiles = aspect_ratio_mask.reshape(-1, aspect_ratio_mask.shape[-1], 1).bool()
        in_tile = torch.arange(padded, device=tiles.device) < rows
        return (tiles & in_tile).reshape(-1)

    def append_tokens(
        self, inputs: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Also the cross-attention mask: appended tokens see the images the last token sees
        (as in ``generate``)."""
        out = super().append_tokens(inputs, ids, mask)
        if "cross_attention_mask" in inputs:
            cross = inputs["cross_attention_mask"]
            last = cross[:, -1:].expand(-1, ids.shape[1], *cross.shape[2:])
            out["cross_attention_mask"] = torch.cat([cross, last], dim=1)
        return out

    def format_prompt(self, processor: Any, question: str) -> str:
        """The chat template (it writes ``<|begin_of_text|>``); without one, the base model's
        ``<|image|><|begin_of_text|>question``."""
        if getattr(processor, "chat_template", None):
            return super().format_prompt(processor, question)
        return f"{processor.image_token}{processor.tokenizer.bos_token}{question}"

    def encode(self, processor: Any, images: list, texts: list[str]) -> dict:
        """Images nested one list per sample (a flat list is read as one sample's images),
        left padding, and no special tokens added: the processor writes ``<|begin_of_text|>``
        into every prompt without one (after leading ``<|image|>`` tokens)."""
        return processor(
            images=[[image] for image in images],
            text=texts,
            padding=True,
            padding_side="left",
            add_special_tokens=False,
            return_tensors="pt",
        )


@hookimpl
def mmneuron_register_adapters(register):
    register(MllamaAdapter())
