"""InternVL, HF-native (``InternVLForConditionalGeneration``): InternViT 3 x 48 (``encoder.layer``),
pixel-shuffle projector 1 x 40, Qwen3 2 x 80 (InternVL3.5 style; ``qwen2=True`` builds the
InternVL3 style with a Qwen2 LLM), dynamic 32-pixel tiles.

Full-size configs (``full_configs/``):

- ``OpenGVLab-InternVL3-8B-hf``: text from MindSpeed-MM's ``examples/internvl3/model_8B.json``
  (Qwen2: 28 x 18944, hidden 3584, vocab 151674), image token 151667 and eos 151645 from
  transformers' ``convert_internvl_weights_to_hf.py``, vision = ``InternVLVisionConfig``
  defaults (InternViT-300M, 24 x 4096, 448 px, patch 14), shared by InternVL3 1B-8B.
- ``OpenGVLab-InternVL3_5-8B-HF``: text from ``OpenGVLab/InternVL3_5-8B``'s ``llm_config``
  (Qwen3: 36 x 12288, hidden 4096, vocab 151936), vision as InternVL3 (InternViT-300M), image
  token 151671 from a public InternVL3.5 HF-format config (not checked for 8B; it does not
  change the components).

Both set ``tie_word_embeddings: false`` at the top level, as the checkpoints untie the LM head.
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    GotOcr2ImageProcessorPil,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLProcessor,
    InternVLVisionConfig,
    Qwen2Config,
    Qwen3Config,
)

from mmneuron_bench.models.compat import no_video_processor, video_stand_in
from mmneuron_bench.testing.checkpoints import WORDS, build_and_save
from mmneuron_bench.testing.families import Family
from mmneuron_bench.testing.families.llava_onevision import qwen2_config, qwen_tokenizer

IMAGE_SIZE = 32  # one tile
PATCH_SIZE = 8  # 4 x 4 patches per tile, 2 x 2 after the pixel shuffle
TOKENS_PER_TILE = (IMAGE_SIZE // PATCH_SIZE) ** 2 // 4
MAX_TILES = 4
SPECIALS = (
    "<unk>", "<|im_start|>", "<|im_end|>", "<|endoftext|>",
    "<IMG_CONTEXT>", "<img>", "</img>", "<video>",
)  # fmt: skip
IMAGE_ID = SPECIALS.index("<IMG_CONTEXT>")

# ChatML as in the InternVL HF checkpoints: string or typed content; an image item renders as
# the context token, which the processor expands to <img> + <IMG_CONTEXT> x tokens + </img>.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{'<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_internvl(path: str | Path, qwen2: bool = False) -> Path:
    """InternVL with 4 ``<IMG_CONTEXT>`` per 32-pixel tile: a 32 x 32 image is one tile (6
    tokens with ``<img>``/``</img>``); a 64 x 32 one two tiles and a thumbnail (14 tokens)."""

    def build():
        text = qwen2_config(len(SPECIALS) + len(WORDS), Qwen2Config)
        if not qwen2:
            text = qwen2_config(len(SPECIALS) + len(WORDS), Qwen3Config, head_dim=20)
        config = InternVLConfig(
            vision_config=InternVLVisionConfig(
                hidden_size=24,
                intermediate_size=48,
                num_hidden_layers=3,
                num_attention_heads=2,
                image_size=IMAGE_SIZE,
                patch_size=PATCH_SIZE,
                hidden_act="gelu",
                norm_type="layer_norm",
                use_qk_norm=False,
                use_mean_pooling=True,  # as the checkpoints: the vision `layernorm` is Identity
                initializer_range=0.2,
            ),
            text_config=text,
            image_token_id=IMAGE_ID,
            image_seq_length=TOKENS_PER_TILE,
            downsample_ratio=0.5,
            vision_feature_layer=-1,
            vision_feature_select_strategy="default",
            tie_word_embeddings=False,
        )
        tokenizer = qwen_tokenizer(
            SPECIALS,
            CHAT_TEMPLATE,
            extra_special_tokens={
                "start_image_token": "<img>",
                "end_image_token": "</img>",
                "context_image_token": "<IMG_CONTEXT>",
                "video_token": "<video>",
            },
        )
        image_processor = GotOcr2ImageProcessorPil(
            size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
            crop_to_patches=True,
            min_patches=1,
            max_patches=MAX_TILES,
            image_mean=[0.485, 0.456, 0.406],
            image_std=[0.229, 0.224, 0.225],
        )
        processor = InternVLProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=no_video_processor(video_processor_type="InternVLVideoProcessor"),
            image_seq_length=TOKENS_PER_TILE,
            chat_template=CHAT_TEMPLATE,
        )
        return InternVLForConditionalGeneration(config), processor

    with video_stand_in():  # the processor's video slot without torchvision
        return build_and_save(path, build)


VISION = ("vision", 24, 4096)  # InternViT-300M
FAMILIES = [
    Family(
        "internvl",
        build_tiny_internvl,
        {"vision": ("vision", 3, 48), "projector": ("connector", 1, 40), "llm": ("llm", 2, 80)},
        "internvl_hf",
        image_sizes=((32, 32), (64, 32), (40, 72)),
        full_size={
            "OpenGVLab-InternVL3-8B-hf": {
                "vision": VISION,
                "projector": ("connector", 1, 3584),
                "llm": ("llm", 28, 18944),
            },
            "OpenGVLab-InternVL3_5-8B-HF": {
                "vision": VISION,
                "projector": ("connector", 1, 4096),
                "llm": ("llm", 36, 12288),
            },
        },
    )
]
