"""Gemma 3: SigLIP 3 x 48, a projector without neurons (4 soft tokens per image), Gemma 3 2 x 80.

Full-size configs (``full_configs/``): ``google-gemma-3-4b-it`` from the hub config's keys
with the ``Gemma3TextConfig``/``SiglipVisionConfig`` defaults it relies on (cross-checked
against public copies and a parameter count of 4.30 B); ``google-gemma-3-12b-it`` from a
public copy of its full text config (12.19 B parameters, as on the model card).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessorPil,
    Gemma3Processor,
    Gemma3TextConfig,
)

from mmneuron_bench.testing.families import Family
from mmneuron_bench.testing.families._siglip import (
    IMAGE_SIZE,
    LLM_HIDDEN,
    LLM_LAYERS,
    LLM_WIDTH,
    save,
    siglip,
    tokenizer,
)

SPECIALS = (
    "<pad>", "<eos>", "<bos>", "<unk>",
    "<start_of_image>", "<end_of_image>", "<image_soft_token>",
    "<start_of_turn>", "<end_of_turn>",
)  # fmt: skip
TOKENS_PER_IMAGE = 4  # mm_tokens_per_image: 4 x 4 patches average-pooled by 2 -> 2 x 2

# Gemma 3's template in miniature: the system text is prepended to the first user turn, the
# assistant role is "model", an image item becomes <start_of_image> (which the processor
# expands to "\n\n<start_of_image>" + soft tokens + "<end_of_image>\n\n").
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% if messages[0]['content'] is string %}{% set first = messages[0]['content'] + '\n\n' %}"
    "{% else %}{% set first = messages[0]['content'][0]['text'] + '\n\n' %}{% endif %}"
    "{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n{% if loop.first %}{{ first }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<start_of_image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def build_tiny_gemma3(path: str | Path) -> Path:
    """Gemma 3: SigLIP 3 x 48, projector without neurons (4 soft tokens/image), Gemma 3 2 x 80.

    Layer 0 is a sliding-window layer (window 8, shorter than the prompts). The projector's
    matrix is created as zeros by transformers (a fresh model ignores its images); it gets
    N(0, 0.2) values here.
    """

    def build():
        tok = tokenizer(
            SPECIALS, "<bos>", "<eos>", "<pad>", "<unk>",
            extra={
                "boi_token": "<start_of_image>",
                "eoi_token": "<end_of_image>",
                "image_token": "<image_soft_token>",
            },
        )  # fmt: skip
        processor = Gemma3Processor(
            image_processor=Gemma3ImageProcessorPil(
                size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_pan_and_scan=False
            ),
            tokenizer=tok,
            chat_template=CHAT_TEMPLATE,
            image_seq_length=TOKENS_PER_IMAGE,
        )
        ids = {t: i for i, t in enumerate(SPECIALS)}
        config = Gemma3Config(
            vision_config=siglip(),
            text_config=Gemma3TextConfig(
                vocab_size=len(tok),
                hidden_size=LLM_HIDDEN,
                intermediate_size=LLM_WIDTH,
                num_hidden_layers=LLM_LAYERS,
                num_attention_heads=2,
                num_key_value_heads=1,
                head_dim=16,
                query_pre_attn_scalar=16,
                sliding_window=8,
                layer_types=["sliding_attention", "full_attention"],
                max_position_embeddings=512,
                initializer_range=0.1,
                pad_token_id=ids["<pad>"],
                bos_token_id=ids["<bos>"],
                eos_token_id=ids["<eos>"],
            ),
            mm_tokens_per_image=TOKENS_PER_IMAGE,
            boi_token_index=ids["<start_of_image>"],
            eoi_token_index=ids["<end_of_image>"],
            image_token_index=ids["<image_soft_token>"],
        )
        model = Gemma3ForConditionalGeneration(config)
        with torch.no_grad():
            model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.2)
        return model, processor

    return save(path, build, SPECIALS, "<bos>", "<eos>", "<pad>")


FAMILIES = [
    Family(
        "gemma3",
        build_tiny_gemma3,
        {"vision": ("vision", 3, 48), "llm": ("llm", 2, 80)},
        "gemma3",
        image_sizes=((32, 32), (48, 24)),  # every image is resized to the tower's size
        full_size={
            "google-gemma-3-4b-it": {"vision": ("vision", 27, 4304), "llm": ("llm", 34, 10240)},
            "google-gemma-3-12b-it": {"vision": ("vision", 27, 4304), "llm": ("llm", 48, 15360)},
        },
    )
]
