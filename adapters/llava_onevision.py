"""LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``): SigLIP tower, MLP projector,
Qwen2 LLM, any-resolution (AnyRes) tiling.

LLaVA's modules and paths, so :class:`LlavaAdapter` fits unchanged. Its unused-layer rule
follows ``vision_feature_layer``: the llava-hf checkpoints read the last SigLIP layer (``-1``;
the 27th so400m layer was dropped at conversion), so no vision layer is unused; a config with
``-2`` leaves the last one unused.

Rows and tokens: padded tile slots never reach the tower (the model slices each image's real
tiles), so every vision and projector row is a real crop patch. Not every row becomes an LLM
token, though: AnyRes removes the crop patches covering the letterbox padding of its canvas
and, past ``anyres_max_9``, interpolates the crop grid down; the learned ``image_newline``
tokens that end each crop row carry the image token id and so count as image tokens.
"""

from __future__ import annotations

from mmneuron_bench import hookimpl
from mmneuron_bench.adapters.llava import LlavaAdapter


class LlavaOnevisionAdapter(LlavaAdapter):
    name = "llava_onevision"
    model_types = ("llava_onevision",)
    architectures = ("LlavaOnevisionForConditionalGeneration",)
    model_class = "LlavaOnevisionForConditionalGeneration"
    lmms_eval_model = "llava_hf"


@hookimpl
def mmneuron_register_adapters(register):
    register(LlavaOnevisionAdapter())
