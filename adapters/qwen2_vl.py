"""Qwen2-VL (``Qwen2VLForConditionalGeneration``), and what Qwen2.5-VL and Qwen3-VL share.

The three families share the LLM (``model.language_model``), the merger that turns four
neighbouring vision patches into one LLM token (``model.visual.merger``), and their inputs:
the patches of a batch are concatenated (``pixel_values`` is ``[sum of t*h*w, features]``,
never padded; ``image_grid_thw`` says which rows belong to which image), and the language
model's sequence holds ``<|vision_start|>``, one ``<|image_pad|>`` per merged token and
``<|vision_end|>``. What differs:

| family | vision MLP | connector |
|---|---|---|
| Qwen2-VL (here) | ``fc1 -> act -> fc2`` | ``merger.mlp``: Linear, GELU, Linear (LayerNorm first) |
| Qwen2.5-VL (:mod:`.qwen2_5_vl`) | gated ``act_fn(gate_proj(x))`` | as Qwen2-VL (RMSNorm first) |
| Qwen3-VL (:mod:`.qwen3_vl`) | ``linear_fc1 -> act_fn -> linear_fc2`` | ``merger``, deepstack |
"""

from __future__ import annotations

import math
from io import BytesIO
from typing import Any, ClassVar

from PIL import Image

from mmneuron_bench import ComponentSpec, ModelAdapter, fc_mlp, gated_mlp, hookimpl, projector_mlp

VISION_BLOCKS = "model.visual.blocks"
LLM_LAYERS = "model.language_model.layers"


def lmms_eval_image(
    image: Image.Image, factor: int, min_pixels: int, max_pixels: int, jpeg: bool
) -> Image.Image:
    """The image exactly as lmms-eval's Qwen models hand it to the processor.

    ``jpeg``: re-encoded as JPEG quality 85 (``qwen2_vl`` and ``qwen2_5_vl`` send a data URL);
    then made RGB (white behind transparency) and resized by ``qwen_vl_utils``' rule
    (``smart_resize`` to multiples of ``factor`` = patch size x merge size, total pixels in
    ``[min_pixels, max_pixels]``, PIL's default resampling).
    """
    if jpeg:
        buffer = BytesIO()
        (image if image.mode == "RGB" else image.convert("RGB")).save(
            buffer, format="JPEG", quality=85
        )
        image = Image.open(BytesIO(buffer.getvalue()))
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.split()[3])
        image = background
    else:
        image = image.convert("RGB")
    width, height = image.size
    new_height, new_width = smart_resize(height, width, factor, min_pixels, max_pixels)
    return image.resize((new_width, new_height))


def smart_resize(
    height: int, width: int, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """``qwen_vl_utils.smart_resize``: sides divisible by ``factor``, aspect kept, total pixels
    within ``[min_pixels, max_pixels]``."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"image aspect ratio above 200 ({width}x{height})")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


class QwenVLAdapter(ModelAdapter):
    """What the three families share: the LLM, positions, prompts and image preparation."""

    decoder_layers = LLM_LAYERS
    final_norm = "model.language_model.norm"
    lm_head = "lm_head"
    # lmms-eval 0.7.3's defaults for this family's model: system prompt, pixel limits,
    # resize factor (its patch size x 2) and whether images travel as JPEG.
    system_prompt: ClassVar[str] = "You are a helpful assistant."
    min_pixels: ClassVar[int] = 256 * 28 * 28
    max_pixels: ClassVar[int] = 1605632
    resize_factor: ClassVar[int] = 28
    jpeg: ClassVar[bool] = True

    def position_ids(self, inputs: dict) -> None:
        """None: the model computes its 3-D rotary positions (M-RoPE) itself.

        ``get_rope_index`` gives image tokens their (t, h, w) positions and skips padding, so
        a left-padded sample gets exactly the positions it has alone. The default
        ``attention_mask.cumsum(-1) - 1`` would be expanded to three equal rows: image tokens
        would lose their 2-D positions and the text after an image would shift.
        """
        return None

    def format_prompt(self, processor: Any, question: str) -> str:
        """lmms-eval's prompt: the system message, then the image and the question.

        (``<image>`` is removed from the question, as lmms-eval's Qwen models do.)
        """
        messages = [
            {"role": "system", "content": self.system_prompt},
            {
                "role": "user",
                "content": [
                    {"type": "image"},
                    {"type": "text", "text": question.replace("<image>", "")},
                ],
            },
        ]
        return processor.apply_chat_template(messages, add_generation_prompt=True)

    def paper_prompt(self, processor: Any, question: str) -> str:
        """The image between its vision start and end tokens, a new line, the bare question."""
        return f"<|vision_start|>{processor.image_token}<|vision_end|>\n{question}"

    def encode(self, processor: Any, images: list, texts: list[str]) -> dict:
        """The processor's inputs for the images lmms-eval's Qwen model would see.

        Each image is prepared as lmms-eval 0.7.3's model prepares it with its default
        arguments (:func:`lmms_eval_image`: JPEG for Qwen2/2.5-VL, ``qwen_vl_utils``' resize
        with the model's default ``min_pixels``/``max_pixels``), and the processor does not
        resize again, so recording counts the tokens evaluation runs. Padding is on the left.
        """
        prepared = [
            lmms_eval_image(image, self.resize_factor, self.min_pixels, self.max_pixels, self.jpeg)
            for image in images
        ]
        return processor(
            images=prepared,
            text=texts,
            padding=True,
            padding_side="left",
            do_resize=False,
            return_tensors="pt",
        )


def merger_mlp(at: str = "model.visual.merger.mlp") -> ComponentSpec:
    """Qwen2/2.5-VL's merger: ``mlp`` is ``Sequential(Linear, GELU, Linear)``."""
    return projector_mlp("merger", "connector", at=at, linear_1="0", act="1", linear_2="2")


class Qwen2VLAdapter(QwenVLAdapter):
    name = "qwen2_vl"
    model_types = ("qwen2_vl",)
    architectures = ("Qwen2VLForConditionalGeneration",)
    model_class = "Qwen2VLForConditionalGeneration"
    lmms_eval_model = "qwen2_vl"
    components = (
        fc_mlp("vision", "vision", VISION_BLOCKS, act="act"),
        merger_mlp(),
        gated_mlp("llm", "llm", LLM_LAYERS),
    )
    min_pixels = 3136
    max_pixels = 602112


@hookimpl
def mmneuron_register_adapters(register):
    register(Qwen2VLAdapter())
