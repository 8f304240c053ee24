"""Gemma 3 (``Gemma3ForConditionalGeneration``): SigLIP tower, a projector without neurons,
Gemma 3 LLM with GeGLU MLPs.

- Vision: ``model.vision_tower`` is the ``SiglipVisionModel`` itself (no ``.vision_model``
  wrapper since transformers 5.6); the model reads ``last_hidden_state``, so every layer is
  used (the real configs set ``vision_use_head: false``).
- Connector: ``model.multi_modal_projector`` is an average pooling, an RMSNorm and a matmul
  with the bare parameter ``mm_input_projection_weight``: no activation, no neurons.
- LLM: ``act_fn`` is ``gelu_pytorch_tanh`` (GeGLU). ``activation > 0`` remains the criterion:
  GELU-tanh is positive exactly where its input is.
- Image tokens: ``<image_soft_token>`` (``config.image_token_id``); the ``<start_of_image>``,
  ``<end_of_image>`` and newline tokens around them are text. The processor returns
  ``token_type_ids`` (1 at the soft tokens), from which the model builds bidirectional
  attention within each image: they stay in every forward (recording, analyses,
  loglikelihood), or the decoder states change.
"""

from __future__ import annotations

from typing import Any

from mmneuron_bench import ModelAdapter, fc_mlp, gated_mlp, hookimpl
from mmneuron_bench.models.adapter import encode_image_lists

_LLM = "model.language_model.layers"


class Gemma3Adapter(ModelAdapter):
    name = "gemma3"
    model_types = ("gemma3",)
    architectures = ("Gemma3ForConditionalGeneration",)
    model_class = "Gemma3ForConditionalGeneration"
    lmms_eval_model = "gemma3"
    components = (
        fc_mlp("vision", "vision", "model.vision_tower.encoder.layers"),
        gated_mlp("llm", "llm", _LLM),
    )
    no_neurons = {
        "connector": "model.multi_modal_projector is an average pooling, an RMSNorm and a "
        "weight matrix, without an activation function"
    }
    decoder_layers = _LLM
    final_norm = "model.language_model.norm"
    lm_head = "lm_head"

    def encode(self, processor: Any, images: list, texts: list[str]) -> dict:
        """One image list per sample, and no second ``<bos>``.

        Gemma3Processor reads a flat image list as one sample's images (a batch of two then
        fails: "Found [1, 1] <start_of_image> tokens and [2] images"). Its chat template
        starts with ``<bos>`` and the tokenizer adds another unless told not to (as
        ``apply_chat_template(tokenize=True)``, which lmms-eval's gemma3 uses, does).
        """
        return encode_image_lists(processor, images, texts)


@hookimpl
def mmneuron_register_adapters(register):
    register(Gemma3Adapter())
