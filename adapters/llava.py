"""LLaVA-1.5 (``LlavaForConditionalGeneration``): CLIP vision tower, MLP projector, LLM."""

from __future__ import annotations

from torch import nn

from mmneuron_bench.adapter import ComponentSpec, ModelAdapter
from mmneuron_bench.hookspecs import hookimpl

_VISION = "model.vision_tower.encoder.layers"
_LLM = "model.language_model.layers"


class LlavaAdapter(ModelAdapter):
    name = "llava"
    model_types = ("llava",)
    architectures = ("LlavaForConditionalGeneration",)
    model_class = "LlavaForConditionalGeneration"
    lmms_eval_model = "llava_hf"
    components = (
        ComponentSpec(
            "vision",
            "vision",
            _VISION + ".{i}.mlp.activation_fn",
            _VISION + ".{i}.mlp.fc1",
            _VISION,
        ),
        ComponentSpec(
            "projector",
            "connector",
            "model.multi_modal_projector.act",
            "model.multi_modal_projector.linear_1",
        ),
        ComponentSpec(
            "llm", "llm", _LLM + ".{i}.mlp.act_fn", _LLM + ".{i}.mlp.gate_proj", _LLM, "llm"
        ),
    )
    decoder_layers = _LLM
    final_norm = "model.language_model.norm"
    lm_head = "lm_head"

    def unused_layers(
        self, model: nn.Module, spec: ComponentSpec, n_layers: int
    ) -> tuple[int, ...]:
        """Vision layers after ``vision_feature_layer`` (LLaVA reads ``hidden_states[-2]``)."""
        if spec.role != "vision":
            return ()
        selected = model.config.vision_feature_layer
        selected = selected if isinstance(selected, (list, tuple)) else [selected]
        # hidden_states[k] is the output of layer k-1; hidden_states[0] is the embeddings.
        last_used = max(k if k >= 0 else n_layers + 1 + k for k in selected) - 1
        return tuple(range(last_used + 1, n_layers))


@hookimpl
def mmneuron_register_adapters(register):
    register(LlavaAdapter())
