"""LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``): SigLIP 3 x 48, projector
1 x 40, Qwen2 2 x 80, AnyRes with 32-pixel crops.

Full-size config (``full_configs/llava-hf-llava-onevision-qwen2-7b-ov-hf``): the llava-hf
7B-ov conversion (transformers' ``convert_llava_onevision_weights_to_hf.py``: SigLIP-so400m
with its last layer dropped, 26 x 4304, ``num_image_tokens=729``, strategy ``full``; the text
config of ``Qwen/Qwen2-7B-Instruct``; ``config.json`` diff of llava-hf commit bd59bb6: vocab
152128, image token 151646, fp16), the pinpoints and ``vision_feature_layer=-1`` being
``LlavaOnevisionConfig`` defaults.

The tiny checkpoint carries the chat template of the llava-hf conversion (typed content only),
for the processor and the tokenizer alike (transformers 5 saves one ``chat_template.jinja``):
with it, lmms-eval's ``llava_hf`` (string content) needs the workaround
:func:`mmneuron_bench.lmms.workarounds.string_content_template`, which the conformance test
therefore exercises.
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessorPil,
    LlavaOnevisionProcessor,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipVisionConfig,
)

from mmneuron_bench.models.compat import no_video_processor, video_stand_in
from mmneuron_bench.synthetic.tokenizers import word_level
from mmneuron_bench.testing.checkpoints import WORDS, build_and_save
from mmneuron_bench.testing.families import Family

IMAGE_SIZE = 32  # one crop (and the base image) is 32 x 32 pixels
PATCH_SIZE = 8  # 4 x 4 = 16 patches per crop
PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]  # (height, width) canvases of crops
# Qwen-like special tokens; ids 1-3 match `build_and_save`'s generation config (bos 1, eos 2,
# pad 3): <|im_end|> ends a turn, <|endoftext|> pads.
SPECIALS = ("<unk>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<image>", "<video>")
IMAGE_ID, VIDEO_ID = SPECIALS.index("<image>"), SPECIALS.index("<video>")

# The template of the llava-hf OneVision checkpoints (transformers' conversion script):
# typed content only; a message whose content is a string renders as nothing.
OFFICIAL_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}{{'<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def qwen_tokenizer(
    specials: tuple[str, ...], chat_template: str, **extra: object
) -> PreTrainedTokenizerFast:
    """Word-level over :data:`WORDS` after ``specials``; like Qwen2's: no BOS or EOS added,
    ``<|im_end|>`` ends a turn, ``<|endoftext|>`` pads (left)."""
    return PreTrainedTokenizerFast(
        tokenizer_object=word_level(specials, "<unk>", WORDS),
        unk_token="<unk>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        chat_template=chat_template,
        model_max_length=1024,
        **extra,
    )


def qwen2_config(vocab_size: int, cls: type = Qwen2Config, **extra: object):
    """A Qwen2 (or Qwen3) LLM of 2 layers, hidden 40, MLP 80, grouped-query attention."""
    return cls(
        vocab_size=vocab_size,
        hidden_size=40,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
        initializer_range=0.2,  # large enough that switching MLP neurons off moves answers
        **extra,
    )


def build_tiny_llava_onevision(path: str | Path) -> Path:
    """LLaVA-OneVision reading the last SigLIP layer (``vision_feature_layer=-1``, strategy
    ``full``) as the llava-hf checkpoints do. A 32 x 32 image gets 16 (base) + 16 (one crop)
    + 4 (a newline per crop row) = 36 image tokens; a 64 x 32 one 16 + 32 + 4 = 52."""

    def build():
        config = LlavaOnevisionConfig(
            vision_config=SiglipVisionConfig(
                hidden_size=24,
                intermediate_size=48,
                num_hidden_layers=3,
                num_attention_heads=2,
                image_size=IMAGE_SIZE,
                patch_size=PATCH_SIZE,
                vision_use_head=False,
            ),
            text_config=qwen2_config(len(SPECIALS) + len(WORDS)),
            image_token_index=IMAGE_ID,
            video_token_index=VIDEO_ID,
            image_grid_pinpoints=PINPOINTS,
            vision_feature_layer=-1,
            vision_feature_select_strategy="full",
            vision_aspect_ratio="anyres_max_9",
            use_image_newline_parameter=True,
            tie_word_embeddings=False,
        )
        image_processor = LlavaOnevisionImageProcessorPil(
            size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
            image_grid_pinpoints=PINPOINTS,
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        )
        processor = LlavaOnevisionProcessor(
            image_processor=image_processor,
            tokenizer=qwen_tokenizer(SPECIALS, OFFICIAL_CHAT_TEMPLATE),
            video_processor=no_video_processor(video_processor_type="LlavaOnevisionVideoProcessor"),
            num_image_tokens=(IMAGE_SIZE // PATCH_SIZE) ** 2,
            vision_feature_select_strategy="full",
            vision_aspect_ratio="anyres_max_9",
            chat_template=OFFICIAL_CHAT_TEMPLATE,
        )
        return LlavaOnevisionForConditionalGeneration(config), processor

    with video_stand_in():  # the processor's video slot without torchvision
        return build_and_save(path, build)


FAMILIES = [
    Family(
        "llava_onevision",
        build_tiny_llava_onevision,
        {"vision": ("vision", 3, 48), "projector": ("connector", 1, 40), "llm": ("llm", 2, 80)},
        "llava_hf",
        image_sizes=((32, 32), (64, 32), (40, 56)),
        full_size={
            "llava-hf-llava-onevision-qwen2-7b-ov-hf": {
                "vision": ("vision", 26, 4304),
                "projector": ("connector", 1, 3584),
                "llm": ("llm", 28, 18944),
            }
        },
    )
]
