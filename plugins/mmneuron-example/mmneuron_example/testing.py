"""A tiny offline BLIP-2 + OPT checkpoint for tests, built like mmneuron-bench's own.

| component | layers x width |
|---|---|
| vision | 3 x 48 |
| qformer_query | 2 x 44 |
| llm (OPT) | 2 x 72 |
"""

from __future__ import annotations

from pathlib import Path

from mmneuron_bench.synthetic.tokenizers import (
    BOS_ID,
    EOS_ID,
    IMAGE_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    llm_tokenizer,
)
from mmneuron_bench.testing.checkpoints import IMAGE_SIZE, PATCH_SIZE, WORDS, build_and_save
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    Blip2QFormerConfig,
    Blip2VisionConfig,
    BlipImageProcessorPil,
    OPTConfig,
)

NUM_QUERY_TOKENS = 8
COMPONENTS = {
    "vision": ("vision", 3, 48),
    "qformer_query": ("connector", 2, 44),
    "llm": ("llm", 2, 72),
}


def build_tiny_blip2(path: str | Path) -> Path:
    """BLIP-2 (ViT + Q-Former + OPT): NUM_QUERY_TOKENS image tokens per image."""

    def build():
        config = Blip2Config(
            vision_config=Blip2VisionConfig(
                hidden_size=24,
                intermediate_size=COMPONENTS["vision"][2],
                num_hidden_layers=COMPONENTS["vision"][1],
                num_attention_heads=2,
                image_size=IMAGE_SIZE,
                patch_size=PATCH_SIZE,
                initializer_range=0.02,  # the default (1e-10) leaves every activation at 0
            ),
            qformer_config=Blip2QFormerConfig(
                hidden_size=32,
                intermediate_size=COMPONENTS["qformer_query"][2],
                num_hidden_layers=COMPONENTS["qformer_query"][1],
                num_attention_heads=2,
            ),
            text_config=OPTConfig(
                vocab_size=len(SPECIAL_TOKENS) + len(WORDS),
                hidden_size=40,
                ffn_dim=COMPONENTS["llm"][2],
                num_hidden_layers=COMPONENTS["llm"][1],
                num_attention_heads=2,
                max_position_embeddings=512,
                bos_token_id=BOS_ID,
                eos_token_id=EOS_ID,
                pad_token_id=PAD_ID,
            ),
            num_query_tokens=NUM_QUERY_TOKENS,
            image_token_index=IMAGE_ID,
        )
        processor = Blip2Processor(
            image_processor=BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
            tokenizer=llm_tokenizer(WORDS),
            num_query_tokens=NUM_QUERY_TOKENS,
        )
        return Blip2ForConditionalGeneration(config), processor

    return build_and_save(path, build)
