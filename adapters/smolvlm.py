"""SmolVLM / SmolVLM2 (``SmolVLMForConditionalGeneration``): Idefics3's module tree.

The only model difference is that SmolVLM keeps one empty image when a batch has none.
``SmolVLMProcessor`` needs ``num2words`` (for video prompts only) and a video processor
(torchvision): :meth:`SmolVLMAdapter.load_processor` loads it with stand-ins for both, which refuse
video; images work as with the real ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from mmneuron_bench import hookimpl
from mmneuron_bench.adapters.idefics3 import Idefics3Adapter
from mmneuron_bench.errors import MMNeuronError


def _no_num2words(*_args: Any, **_kwargs: Any) -> str:
    raise MMNeuronError("SmolVLM video prompts need num2words, which is not installed here")


@contextlib.contextmanager
def num2words_stand_in() -> Iterator[None]:
    """While active, and only without ``num2words``, ``SmolVLMProcessor`` can be built: its
    check for the package (used by video prompts alone) sees a stand-in that refuses."""
    from transformers.models.smolvlm import processing_smolvlm

    if processing_smolvlm.num2words is not None:
        yield
        return
    processing_smolvlm.num2words = _no_num2words
    try:
        yield
    finally:
        processing_smolvlm.num2words = None


class SmolVLMAdapter(Idefics3Adapter):
    name = "smolvlm"
    model_types = ("smolvlm",)
    architectures = ("SmolVLMForConditionalGeneration",)
    model_class = "SmolVLMForConditionalGeneration"

    def load_processor(self, pretrained: str) -> Any:
        """As every adapter loads it, with :func:`num2words_stand_in`."""
        with num2words_stand_in():
            return super().load_processor(pretrained)


@hookimpl
def mmneuron_register_adapters(register):
    register(SmolVLMAdapter())
