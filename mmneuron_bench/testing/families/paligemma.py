"""PaliGemma 2: SigLIP 3 x 48, one Linear without neurons (16 tokens per image), Gemma 2 2 x 80.

Full-size config (``full_configs/google-paligemma2-3b-pt-224``): a public copy naming
``google/paligemma2-3b-pt-224`` as its origin, checked against transformers' own
``convert_paligemma2_weights_to_hf.py`` (2B text: 2304 / 9216 / 26 layers; SigLIP So400m
27 x 4304, patch 14, 224 px) and a parameter count of 3.03 B.
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    Gemma2Config,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
    SiglipImageProcessorPil,
)

from mmneuron_bench.testing.families import Family
from mmneuron_bench.testing.families._siglip import (
    IMAGE_SIZE,
    LLM_HIDDEN,
    LLM_LAYERS,
    LLM_WIDTH,
    PATCH_SIZE,
    save,
    siglip,
    tokenizer,
)

SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<image>")
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH_SIZE) ** 2  # 16: one token per patch


def build_tiny_paligemma(path: str | Path) -> Path:
    """PaliGemma 2: SigLIP 3 x 48, one Linear (16 tokens/image), Gemma 2 2 x 80.

    The logits are soft-capped (30, as the real model) and so are the attention scores (50).
    The processor adds the 1024 ``<locXXXX>`` and 128 ``<segXXX>`` tokens to the tokenizer,
    as the real vocabulary has them; the LLM's vocabulary is sized after that.
    """

    def build():
        tok = tokenizer(
            SPECIALS, "<bos>", "<eos>", "<pad>", "<unk>",
            extra={"image_token": "<image>"}, add_bos=False,
        )  # fmt: skip
        image_processor = SiglipImageProcessorPil(
            size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_seq_length=TOKENS_PER_IMAGE
        )
        processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)
        ids = {t: i for i, t in enumerate(SPECIALS)}
        config = PaliGemmaConfig(
            vision_config=siglip(projection_dim=LLM_HIDDEN, num_image_tokens=TOKENS_PER_IMAGE),
            text_config=Gemma2Config(
                vocab_size=len(tok),
                hidden_size=LLM_HIDDEN,
                intermediate_size=LLM_WIDTH,
                num_hidden_layers=LLM_LAYERS,
                num_attention_heads=2,
                num_key_value_heads=1,
                head_dim=16,
                query_pre_attn_scalar=16,
                sliding_window=8,
                max_position_embeddings=512,
                final_logit_softcapping=30.0,
                attn_logit_softcapping=50.0,
                initializer_range=0.1,
                pad_token_id=ids["<pad>"],
                bos_token_id=ids["<bos>"],
                eos_token_id=ids["<eos>"],
            ),
            image_token_index=ids["<image>"],
            projection_dim=LLM_HIDDEN,
        )
        return PaliGemmaForConditionalGeneration(config), processor

    return save(path, build, SPECIALS, "<bos>", "<eos>", "<pad>")


FAMILIES = [
    Family(
        "paligemma",
        build_tiny_paligemma,
        {"vision": ("vision", 3, 48), "llm": ("llm", 2, 80)},
        None,
        image_sizes=((32, 32), (48, 24)),  # every image is resized to the tower's size
        full_size={
            "google-paligemma2-3b-pt-224": {
                "vision": ("vision", 27, 4304),
                "llm": ("llm", 26, 9216),
            }
        },
    )
]
