"""Processors without torchvision: images and text work, video is refused with a clear error.

transformers 5 cannot build or load the processors of several families (Qwen-VL,
LLaVA-OneVision, InternVL, ...) when torchvision is missing, although their image paths are
PIL-only: each has a ``video_processor`` slot, ``AutoVideoProcessor`` knows only
torchvision-backed classes, and the slot's class check looks ``VideoProcessorMixin`` up on the
``transformers`` module, which does not export it without torchvision. The CPU torch build this
project installs cannot load torchvision's wheel, so inside :func:`video_stand_in` the slot gets
a :class:`NoVideoProcessor` that keeps the saved video settings as attributes (image code reads
some, such as ``merge_size``) and refuses any video. Nothing is changed when torchvision loads.

Mistral 3's ``PixtralProcessor`` is marked as needing torchvision and imports one helper from
the torchvision image processor's module, although it works with the PIL image processor:
:func:`pixtral_processor_stand_in` (called by :func:`video_stand_in`) makes the real class
loadable.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmneuron_bench.errors import MMNeuronError


def torchvision_missing() -> bool:
    """Whether transformers sees no torchvision (its answer is cached after the first call)."""
    from transformers.utils.import_utils import is_torchvision_available

    return importlib.util.find_spec("torchvision") is None or not is_torchvision_available()


def _refuse_video(*_args: Any, **_kwargs: Any) -> None:
    raise MMNeuronError("video input needs torchvision, which is not installed here")


def no_video_processor(**fields: Any) -> Any:
    """A :class:`NoVideoProcessor` holding ``fields`` (the video settings to keep)."""
    from transformers.video_processing_utils import VideoProcessorMixin

    class NoVideoProcessor(VideoProcessorMixin):
        """Fills a processor's video slot without torchvision; any video is refused."""

        model_input_names = ["pixel_values_videos", "video_grid_thw"]

        def __init__(self, **kwargs: Any) -> None:
            kwargs.pop("processor_class", None)
            self._fields = dict(kwargs)
            for key, value in kwargs.items():
                setattr(self, key, value)

        def to_dict(self) -> dict:
            """The settings it holds: saving keeps the real ``video_processor_type``."""
            return dict(self._fields)

        __call__ = preprocess = staticmethod(_refuse_video)

    return NoVideoProcessor(**fields)


def _saved_video_settings(path: str | Path) -> dict:
    """The saved video processor settings of a local checkpoint (empty for a hub id)."""
    folder = Path(path)
    for name, key in (
        ("video_preprocessor_config.json", None),
        ("processor_config.json", "video_processor"),
    ):
        file = folder / name
        if file.is_file():
            data = json.loads(file.read_text())
            data = data.get(key, {}) if key else data
            if data:
                return data
    return {}


@contextlib.contextmanager
def video_stand_in() -> Iterator[None]:
    """While active (and only without torchvision), processors built or loaded get a
    :class:`NoVideoProcessor` in their video slot. Both patches are undone afterwards; the
    processors keep working for images."""
    if not torchvision_missing():
        yield
        return
    pixtral_processor_stand_in()
    import transformers
    from transformers.models.auto.video_processing_auto import AutoVideoProcessor
    from transformers.video_processing_utils import VideoProcessorMixin

    original = AutoVideoProcessor.__dict__["from_pretrained"]
    had_mixin = "VideoProcessorMixin" in transformers.__dict__

    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        return no_video_processor(**_saved_video_settings(pretrained_model_name_or_path))

    AutoVideoProcessor.from_pretrained = classmethod(from_pretrained)
    transformers.VideoProcessorMixin = VideoProcessorMixin
    try:
        yield
    finally:
        AutoVideoProcessor.from_pretrained = original
        if not had_mixin:
            del transformers.VideoProcessorMixin


_PIXTRAL_TV = "transformers.models.pixtral.image_processing_pixtral"


def pixtral_processor_stand_in() -> None:
    """Make ``PixtralProcessor`` (Mistral 3) loadable without torchvision (idempotent).

    transformers 5.24 declares it ``@requires(backends=("torchvision", "torch"))`` and its module
    imports ``get_resize_output_image_size`` from the torchvision image processor's module, while
    the PIL module has the same function; ``AutoProcessor`` then fails for every Mistral 3
    checkpoint. While the real processor module is imported, a stand-in of the torchvision
    module holds the PIL function; the real class is then put on the lazy
    ``transformers.models.pixtral`` module, where ``AutoProcessor`` looks it up. Does nothing
    when torchvision loads or the class is already there.
    """
    import sys
    import types

    from transformers import ProcessorMixin

    try:
        import transformers.models.pixtral as pixtral
    except ImportError:  # a transformers without Pixtral
        return
    found = pixtral.__dict__.get("PixtralProcessor")
    if not torchvision_missing() or (isinstance(found, type) and issubclass(found, ProcessorMixin)):
        return
    from transformers.models.pixtral import image_processing_pil_pixtral as pil

    stand_in = _PIXTRAL_TV not in sys.modules
    if stand_in:
        module = types.ModuleType(_PIXTRAL_TV, "Stand-in installed by mmneuron-bench.")
        module.get_resize_output_image_size = pil.get_resize_output_image_size
        sys.modules[_PIXTRAL_TV] = module
    try:
        from transformers.models.pixtral.processing_pixtral import PixtralProcessor
    finally:
        if stand_in:
            del sys.modules[_PIXTRAL_TV]
    pixtral.PixtralProcessor = PixtralProcessor
