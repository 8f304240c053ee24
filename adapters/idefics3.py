"""Idefics3 (``Idefics3ForConditionalGeneration``; also SmolVLM-Instruct v1): SigLIP-style
tower, a pixel-shuffle connector without neurons, Llama LLM.

- Vision: ``model.vision_model.encoder.layers`` (``fc1 -> activation_fn -> fc2``); every
  layer is used (the model reads ``last_hidden_state``).
- Connector: ``model.connector`` is a pixel shuffle (a reshape) and
  ``modality_projection.proj``, a single ``nn.Linear``: no neurons.
- Image splitting: an image larger than the frame size is cut into rows x cols frames plus a
  global frame, so samples have different frame counts. The processor pads them with all-zero
  frames, which the model drops before the vision tower: every row of the vision activation
  is a real frame's patch, and counts do not depend on the batch.
- Image tokens: ``<image>`` (``config.image_token_id``); ``<fake_token_around_image>``,
  ``<row_r_col_c>``, ``<global-img>`` and the newlines between rows are text.
- lmms-eval 0.7.3 has no model for it (see :attr:`lmms_eval_missing`).
"""

from __future__ import annotations

from typing import Any

from mmneuron_bench import ModelAdapter, fc_mlp, gated_mlp, hookimpl
from mmneuron_bench.models.adapter import encode_image_lists

_LLM = "model.text_model.layers"


class Idefics3Adapter(ModelAdapter):
    name = "idefics3"
    model_types = ("idefics3",)
    architectures = ("Idefics3ForConditionalGeneration",)
    model_class = "Idefics3ForConditionalGeneration"
    lmms_eval_model = None
    lmms_eval_missing = (
        "lmms-eval 0.7.3 has no Idefics3/SmolVLM model: its 'idefics2' loads "
        "Idefics2ForConditionalGeneration (another connector, initialised at random) and "
        "'huggingface' loads AutoModel, without LM head; record, select and the analyses work"
    )
    components = (
        fc_mlp("vision", "vision", "model.vision_model.encoder.layers"),
        gated_mlp("llm", "llm", _LLM),
    )
    no_neurons = {
        "connector": "model.connector is a pixel shuffle and a single Linear, without an "
        "activation function"
    }
    decoder_layers = _LLM
    final_norm = "model.text_model.norm"
    lm_head = "lm_head"

    def encode(self, processor: Any, images: list, texts: list[str]) -> dict:
        """One image list per sample (``SmolVLMProcessor`` reads a flat list as one sample's
        images), and no second ``<bos>`` when the chat template already starts with one."""
        return encode_image_lists(processor, images, texts)


@hookimpl
def mmneuron_register_adapters(register):
    register(Idefics3Adapter())
