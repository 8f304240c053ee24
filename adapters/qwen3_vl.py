"""Qwen3-VL, dense (``Qwen3VLForConditionalGeneration``): vision ``linear_fc1 -> act_fn ->
linear_fc2``, the merger, and the deepstack mergers whose outputs are added to the image
positions of the first LLM decoder layers' outputs. Mixture-of-experts Qwen3-VL is refused.
Shared parts: :mod:`.qwen2_vl`."""

from __future__ import annotations

from torch import nn

from mmneuron_bench import ComponentSpec, fc_mlp, gated_mlp, hookimpl, projector_mlp
from mmneuron_bench.adapters.qwen2_vl import LLM_LAYERS, VISION_BLOCKS, QwenVLAdapter

_DEEPSTACK = "model.visual.deepstack_merger_list"

MOE_REFUSAL = (
    "mixture-of-experts Qwen3-VL is not supported: its LLM MLP "
    "(Qwen3VLMoeTextSparseMoeBlock) runs one activation over the routed rows of all experts, "
    "so no hook can tell which expert or token a neuron's value belongs to"
)


class Qwen3VLAdapter(QwenVLAdapter):
    name = "qwen3_vl"
    model_types = ("qwen3_vl",)
    architectures = ("Qwen3VLForConditionalGeneration",)
    model_class = "Qwen3VLForConditionalGeneration"
    lmms_eval_model = "qwen3_vl"
    refused_model_types = {"qwen3_vl_moe": MOE_REFUSAL}
    components = (
        fc_mlp("vision", "vision", VISION_BLOCKS, fc1="linear_fc1", act="act_fn", fc2="linear_fc2"),
        projector_mlp(
            "merger",
            "connector",
            at="model.visual.merger",
            linear_1="linear_fc1",
            act="act_fn",
            linear_2="linear_fc2",
        ),
        fc_mlp(
            "deepstack_merger",
            "connector",
            _DEEPSTACK,
            mlp="",
            fc1="linear_fc1",
            act="act_fn",
            fc2="linear_fc2",
        ),
        gated_mlp("llm", "llm", LLM_LAYERS),
    )
    # lmms-eval's qwen3_vl passes PIL images (no JPEG) with image_patch_size=16.
    resize_factor = 32
    jpeg = False

    def unused_layers(
        self, model: nn.Module, spec: ComponentSpec, n_layers: int
    ) -> tuple[int, ...]:
        """Deepstack mergers beyond the LLM's depth: merger ``k`` is added to the output of
        decoder layer ``k`` only while ``k`` is below the number of decoder layers."""
        if spec.name != "deepstack_merger":
            return ()
        depth = model.config.get_text_config().num_hidden_layers
        return tuple(range(depth, n_layers))


@hookimpl
def mmneuron_register_adapters(register):
    register(Qwen3VLAdapter())
