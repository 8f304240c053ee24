"""VipLlava (``VipLlavaForConditionalGeneration``): a LLaVA variant whose projector reads
several vision layers at once.

The projector concatenates the outputs of the vision layers named by ``vision_feature_layer``
(``[-2, -5, -8, -11, 6]`` in llava-hf/vip-llava-7b-hf) and runs ``projector_layernorm ->
linear_1 -> act -> linear_2``: one component of ``text hidden_size`` neurons. The vision
layers after the deepest one it reads never reach the language model: they are reported as
unused. lmms-eval 0.7.3 has no model that loads VipLlava (``llava_hf`` knows LLaVA and
LLaVA-NeXT only), so ``lmms_eval_model`` is None: the adapter serves recording and the
analyses, and an evaluation has to name its own lmms-eval model.
"""

from __future__ import annotations

from mmneuron_bench import ComponentSpec, ModelAdapter, fc_mlp, gated_mlp, hookimpl, projector_mlp
from torch import nn


class VipLlavaAdapter(ModelAdapter):
    name = "vipllava"
    model_types = ("vipllava",)
    architectures = ("VipLlavaForConditionalGeneration",)
    model_class = "VipLlavaForConditionalGeneration"
    lmms_eval_model = None  # lmms-eval 0.7.3 has no VipLlava model
    components = (
        fc_mlp("vision", "vision", "model.vision_tower.encoder.layers"),  # CLIP
        projector_mlp(),  # model.multi_modal_projector.{linear_1, act, linear_2}
        gated_mlp("llm", "llm", "model.language_model.layers"),  # Llama
    )
    decoder_layers = "model.language_model.layers"
    final_norm = "model.language_model.norm"
    lm_head = "lm_head"

    def unused_layers(
        self, model: nn.Module, spec: ComponentSpec, n_layers: int
    ) -> tuple[int, ...]:
        """Vision layers after the deepest one in ``vision_feature_layer``."""
        if spec.role != "vision":
            return ()
        selected = model.config.vision_feature_layer
        selected = [selected] if isinstance(selected, int) else list(selected)
        # hidden_states[k] is the output of layer k-1; hidden_states[0] is the embeddings.
        deepest = max(k if k >= 0 else n_layers + 1 + k for k in selected) - 1
        return tuple(range(deepest + 1, n_layers))


@hookimpl
def mmneuron_register_adapters(register):
    register(VipLlavaAdapter())
