"""LLaVA-1.5 (``LlavaForConditionalGeneration``): CLIP vision tower, MLP projector, LLM."""

from __future__ import annotations

from torch import nn

from mmneuron_bench import ComponentSpec, ModelAdapter, fc_mlp, gated_mlp, hookimpl, projector_mlp


class LlavaAdapter(ModelAdapter):
    name = "llava"
    model_types = ("llava",)
    architectures = ("LlavaForConditionalGeneration",)
    model_class = "LlavaForConditionalGeneration"
    lmms_eval_model = "llava_hf"
    components = (
        fc_mlp("vision", "vision", "model.vision_tower.encoder.layers"),
        projector_mlp(),
        gated_mlp("llm", "llm", "model.language_model.layers"),
    )
    decoder_layers = "model.language_model.layers"
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
