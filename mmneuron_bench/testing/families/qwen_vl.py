"""Qwen2-VL, Qwen2.5-VL, Qwen3-VL (dense): tiny checkpoints of the real classes.

| family | vision (blocks x MLP width) | connector | llm |
|---|---|---|---|
| Qwen2-VL | 3 x 48 (fc1, quick_gelu, fc2) | merger 1 x 64 (Linear, GELU, Linear) | 2 x 80 |
| Qwen2.5-VL | 3 x 48 (gated silu, biases; windows) | merger 1 x 64 (RMSNorm first) | 2 x 80 |
| Qwen3-VL | 3 x 48 (linear_fc1, gelu_tanh) | merger 1 x 64, deepstack mergers 2 x 64 | 2 x 80 |

A merger's width is not free: ``vision hidden x spatial_merge_size**2`` (16 x 4 = 64), the
same for Qwen3-VL's merger and deepstack mergers. Patch sizes are the real ones (14, 14, 16)
so that lmms-eval's resizing (multiples of 28 / 32) gives valid grids. The tokenizer is
word-level with the Qwen special tokens (``<|endoftext|>`` pads, ``<|im_end|>`` ends, no BOS,
left padding) and the Qwen chat templates (Qwen3-VL's adds no default system prompt).

Full-size configs (no hub here, so each was assembled from public copies and cross-checked):
``Qwen-Qwen2-VL-7B-Instruct`` from a re-saved copy of the snapshot a7a06a1 with
the original vision config (depth 32, embed 1280, mlp_ratio 4, = transformers' defaults);
``Qwen-Qwen2.5-VL-7B-Instruct`` and ``-72B-Instruct`` from the Qwen org's AWQ configs (the 72B
LLM width 29568 is the unpadded Qwen2-72B value, the AWQ file pads it to 29696), vision fields
from transformers' ``Qwen2_5_VLVisionConfig`` defaults (7B) and the AWQ file (72B: 3456);
``Qwen-Qwen3-VL-8B-Instruct`` from two re-saved copies and ollama's ``qwen3-vl:8b`` metadata
(36 x 12288 LLM, 27 x 4304 vision, deepstack after blocks 8, 16, 24).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen2VLProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
)

from mmneuron_bench.models.compat import no_video_processor, video_stand_in
from mmneuron_bench.synthetic.tokenizers import word_level
from mmneuron_bench.testing.checkpoints import SEED, WORDS
from mmneuron_bench.testing.families import Family

QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<unk>",
)
PAD_ID, IM_START_ID, EOS_ID, VISION_START_ID, VISION_END_ID, IMAGE_ID, VIDEO_ID, UNK_ID = range(
    len(QWEN_SPECIALS)
)
# Words of lmms-eval's system prompt beyond the shared WORDS.
QWEN_WORDS = (*WORDS, "you", "helpful", "picture", "video")
VOCAB_SIZE = len(QWEN_SPECIALS) + len(QWEN_WORDS)

# The Qwen2-VL / Qwen2.5-VL chat template (a default system prompt when none is given).
QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen3-VL's template adds no default system prompt; otherwise the same token layout.
QWEN3_CHAT_TEMPLATE = QWEN_CHAT_TEMPLATE.replace(
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}",
    "",
)

VISION_HIDDEN = 16  # the mergers read VISION_HIDDEN * 4 = 64 features
VISION_MLP = 48
VISION_DEPTH = 3
LLM_HIDDEN = 32
LLM_MLP = 80
LLM_LAYERS = 2
# Random weights this large make the MLPs matter: switching neurons off changes answers.
INIT = 0.2


def qwen_tokenizer(chat_template: str) -> PreTrainedTokenizerFast:
    """Word-level with the Qwen special tokens: no BOS, left padding, eos ``<|im_end|>``."""
    return PreTrainedTokenizerFast(
        tokenizer_object=word_level(QWEN_SPECIALS, "<unk>", QWEN_WORDS),
        unk_token="<unk>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        chat_template=chat_template,
        model_max_length=4096,
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
    )


def _processor(cls: type, patch_size: int, video_class: str, template: str):
    """The family's processor: the real image processor, our tokenizer, and a stand-in video
    processor (the real ones need torchvision) saved under the real class's name."""
    return cls(
        image_processor=Qwen2VLImageProcessorPil(
            patch_size=patch_size,
            temporal_patch_size=2,
            merge_size=2,
            min_pixels=56 * 56,
            max_pixels=112 * 112,
        ),
        tokenizer=qwen_tokenizer(template),
        video_processor=no_video_processor(
            video_processor_type=video_class,
            patch_size=patch_size,
            temporal_patch_size=2,
            merge_size=2,
        ),
        chat_template=template,
    )


def _text_config(mrope_section: list[int], **extra) -> dict:
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section}
    return {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": LLM_HIDDEN,
        "intermediate_size": LLM_MLP,
        "num_hidden_layers": LLM_LAYERS,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 4096,
        "rope_parameters": rope,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "bos_token_id": None,
        "tie_word_embeddings": False,
        "initializer_range": INIT,
        **extra,
    }


_TOKEN_IDS = {
    "image_token_id": IMAGE_ID,
    "video_token_id": VIDEO_ID,
    "vision_start_token_id": VISION_START_ID,
    "vision_end_token_id": VISION_END_ID,
    "tie_word_embeddings": False,
}


def _save(path: str | Path, build: Callable[[], tuple]) -> Path:
    """Build under a fixed seed (the caller's RNG untouched), greedy generation, save both.

    (``checkpoints.build_and_save`` sets the Llama-style BOS/EOS/PAD ids of the other tiny
    checkpoints; Qwen has no BOS and ends with ``<|im_end|>``.)
    """
    path = Path(path)
    with torch.random.fork_rng(devices=[]), video_stand_in():
        torch.manual_seed(SEED)
        model, processor = build()
        model.generation_config = GenerationConfig(
            do_sample=False, num_beams=1, eos_token_id=EOS_ID, pad_token_id=PAD_ID
        )
        model.save_pretrained(path)
        processor.save_pretrained(path)
    return path


def build_tiny_qwen2_vl(path: str | Path) -> Path:
    """Qwen2-VL: vision 3 x 48 (fc1, quick_gelu, fc2), merger 1 x 64, LLM 2 x 80."""

    def build():
        config = Qwen2VLConfig(
            vision_config={
                "depth": VISION_DEPTH,
                "embed_dim": VISION_HIDDEN,
                "mlp_ratio": VISION_MLP // VISION_HIDDEN,
                "num_heads": 2,
                "hidden_size": LLM_HIDDEN,  # the merger's output: the LLM width
                "hidden_act": "quick_gelu",
                "patch_size": 14,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
                "initializer_range": INIT,
            },
            text_config=_text_config([2, 3, 3]),
            **_TOKEN_IDS,
        )
        processor = _processor(Qwen2VLProcessor, 14, "Qwen2VLVideoProcessor", QWEN_CHAT_TEMPLATE)
        return Qwen2VLForConditionalGeneration(config), processor

    return _save(path, build)


def build_tiny_qwen2_5_vl(path: str | Path) -> Path:
    """Qwen2.5-VL: vision 3 x 48 (gated silu), merger 1 x 64, LLM 2 x 80.

    Windows of 56 px (2 x 2 merged tokens) in blocks 0 and 1, full attention in block 2, so
    the vision rows of every image are in window order, as in the real model.
    """

    def build():
        config = Qwen2_5_VLConfig(
            vision_config={
                "depth": VISION_DEPTH,
                "hidden_size": VISION_HIDDEN,
                "intermediate_size": VISION_MLP,
                "num_heads": 2,
                "out_hidden_size": LLM_HIDDEN,
                "hidden_act": "silu",
                "patch_size": 14,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
                "window_size": 56,
                "fullatt_block_indexes": [2],
                "tokens_per_second": 2,
                "initializer_range": INIT,
            },
            text_config=_text_config([2, 3, 3]),
            **_TOKEN_IDS,
        )
        processor = _processor(Qwen2_5_VLProcessor, 14, "Qwen2VLVideoProcessor", QWEN_CHAT_TEMPLATE)
        return Qwen2_5_VLForConditionalGeneration(config), processor

    return _save(path, build)


def build_tiny_qwen3_vl(path: str | Path) -> Path:
    """Qwen3-VL (dense): vision 3 x 48 (gelu_pytorch_tanh), merger 1 x 64, deepstack mergers
    2 x 64 (reading vision blocks 0 and 1, added to LLM layers 0 and 1), LLM 2 x 80."""

    def build():
        config = Qwen3VLConfig(
            vision_config={
                "depth": VISION_DEPTH,
                "hidden_size": VISION_HIDDEN,
                "intermediate_size": VISION_MLP,
                "num_heads": 2,
                "out_hidden_size": LLM_HIDDEN,
                "hidden_act": "gelu_pytorch_tanh",
                "patch_size": 16,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
                "num_position_embeddings": 16,
                "deepstack_visual_indexes": [0, 1],
                "initializer_range": INIT,
            },
            text_config={
                **_text_config([4, 2, 2]),
                "head_dim": 16,
                "rope_parameters": {
                    "rope_type": "default",
                    "rope_theta": 10000.0,
                    "mrope_section": [4, 2, 2],
                    "mrope_interleaved": True,
                },
            },
            **_TOKEN_IDS,
        )
        processor = _processor(Qwen3VLProcessor, 16, "Qwen3VLVideoProcessor", QWEN3_CHAT_TEMPLATE)
        return Qwen3VLForConditionalGeneration(config), processor

    return _save(path, build)


LLM = ("llm", 2, 80)
VISION = ("vision", 3, 48)
MERGER = ("connector", 1, 64)
# Images of one batch: different sizes give different patch counts (not padded).
SIZES = ((32, 32), (48, 32), (40, 56))

FAMILIES = [
    Family(
        "qwen2_vl",
        build_tiny_qwen2_vl,
        {"vision": VISION, "merger": MERGER, "llm": LLM},
        "qwen2_vl",
        image_sizes=SIZES,
        full_size={
            "Qwen-Qwen2-VL-7B-Instruct": {
                "vision": ("vision", 32, 5120),
                "merger": ("connector", 1, 5120),
                "llm": ("llm", 28, 18944),
            }
        },
    ),
    Family(
        "qwen2_5_vl",
        build_tiny_qwen2_5_vl,
        {"vision": VISION, "merger": MERGER, "llm": LLM},
        "qwen2_5_vl",
        image_sizes=SIZES,
        full_size={
            "Qwen-Qwen2.5-VL-7B-Instruct": {
                "vision": ("vision", 32, 3420),
                "merger": ("connector", 1, 5120),
                "llm": ("llm", 28, 18944),
            },
            "Qwen-Qwen2.5-VL-72B-Instruct": {
                "vision": ("vision", 32, 3456),
                "merger": ("connector", 1, 5120),
                "llm": ("llm", 80, 29568),
            },
        },
    ),
    Family(
        "qwen3_vl",
        build_tiny_qwen3_vl,
        {
            "vision": VISION,
            "merger": MERGER,
            "deepstack_merger": ("connector", 2, 64),
            "llm": LLM,
        },
        "qwen3_vl",
        image_sizes=SIZES,
        full_size={
            "Qwen-Qwen3-VL-8B-Instruct": {
                "vision": ("vision", 27, 4304),
                "merger": ("connector", 1, 4608),
                "deepstack_merger": ("connector", 3, 4608),
                "llm": ("llm", 36, 12288),
            }
        },
    ),
]
