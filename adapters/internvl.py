"""InternVL, HF-native (``InternVLForConditionalGeneration``: InternVL3-hf, InternVL3.5-HF):
InternViT tower, pixel-shuffle projector, Qwen2 or Qwen3 LLM.

The vision layers are ``encoder.layer`` (singular). The projector is ``layer_norm -> linear_1
-> act -> linear_2`` on the 2 x 2 pixel shuffle of the patches, so its neurons (as wide as the
LLM's hidden size) see one row per LLM image token. No vision layer is unused
(``vision_feature_layer=-1``); the CLS row of every tile is computed by each layer but dropped
after the last one (strategy ``default``), which a per-layer mark cannot say.

Token roles: each image is ``<img>`` + 256 x tiles ``<IMG_CONTEXT>`` + ``</img>``; only
``<IMG_CONTEXT>`` (``config.image_token_id``) is an image position, ``<img>`` and ``</img>``
count as text. lmms-eval's ``internvl_hf`` is a chat model (no simple variant) that loads the
weights in bfloat16 whatever ``dtype`` says.

Mixture-of-experts variants (InternVL3.5-30B-A3B and larger: a Qwen3-MoE LLM) are refused:
their experts share one activation module called on fused rows, so no neuron is a hook's.
"""

from __future__ import annotations

from typing import Any

from mmneuron_bench import ModelAdapter, fc_mlp, gated_mlp, hookimpl, projector_mlp

_LLM = "model.language_model.layers"


class InternVLAdapter(ModelAdapter):
    name = "internvl"
    model_types = ("internvl",)
    architectures = ("InternVLForConditionalGeneration",)
    model_class = "InternVLForConditionalGeneration"
    lmms_eval_model = "internvl_hf"
    components = (
        fc_mlp("vision", "vision", "model.vision_tower.encoder.layer"),
        projector_mlp(),
        gated_mlp("llm", "llm", _LLM),
    )
    decoder_layers = _LLM
    final_norm = "model.language_model.norm"
    lm_head = "lm_head"

    def refusal(self, config: Any) -> str | None:
        """An InternVL with a mixture-of-experts LLM (the model type stays ``internvl``)."""
        text = getattr(config, "text_config", None)
        experts = getattr(text, "num_experts", None) or getattr(text, "num_local_experts", None)
        if experts and self.handles(config):
            return (
                f"the language model ({getattr(text, 'model_type', '?')}) is a mixture of "
                f"{experts} experts, whose MLP neurons are not separate modules; only dense "
                "InternVL models are supported"
            )
        return super().refusal(config)


@hookimpl
def mmneuron_register_adapters(register):
    register(InternVLAdapter())
