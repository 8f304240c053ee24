"""Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``): Qwen2-VL's layout with a gated vision
MLP (``act_fn(gate_proj(x)) * up_proj(x) -> down_proj``, with biases), window attention in
most vision blocks and an RMSNorm before the merger. Shared parts: :mod:`.qwen2_vl`."""

from __future__ import annotations

from mmneuron_bench import gated_mlp, hookimpl
from mmneuron_bench.adapters.qwen2_vl import LLM_LAYERS, VISION_BLOCKS, QwenVLAdapter, merger_mlp


class Qwen2_5_VLAdapter(QwenVLAdapter):
    name = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    architectures = ("Qwen2_5_VLForConditionalGeneration",)
    model_class = "Qwen2_5_VLForConditionalGeneration"
    lmms_eval_model = "qwen2_5_vl"
    components = (
        # Gated like the LLM (with biases); vision rows are real patches: every row counts.
        gated_mlp("vision", "vision", VISION_BLOCKS, positions="all"),
        merger_mlp(),
        gated_mlp("llm", "llm", LLM_LAYERS),
    )


@hookimpl
def mmneuron_register_adapters(register):
    register(Qwen2_5_VLAdapter())
