"""LLaVA-NeXT (``LlavaNextForConditionalGeneration``): LLaVA's modules, any-resolution tiling."""

from __future__ import annotations

from mmneuron_bench import hookimpl
from mmneuron_bench.adapters.llava import LlavaAdapter


class LlavaNextAdapter(LlavaAdapter):
    name = "llava_next"
    model_types = ("llava_next",)
    architectures = ("LlavaNextForConditionalGeneration",)
    model_class = "LlavaNextForConditionalGeneration"


@hookimpl
def mmneuron_register_adapters(register):
    register(LlavaNextAdapter())
