"""A tiny offline VipLlava checkpoint for tests, built like mmneuron-bench's own.

| component | layers x width |
|---|---|
| vision (CLIP; the projector reads layers 0 and 2, so layer 3 is unused) | 4 x 52 |
| projector | 1 x 36 |
| llm (Llama) | 2 x 64 |
"""

from __future__ import annotations

from pathlib import Path

from mmneuron_bench.synthetic.tokenizers import (
    BOS_ID,
    EOS_ID,
    IMAGE_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    llava_processor,
    llm_tokenizer,
)
from mmneuron_bench.testing.checkpoints import IMAGE_SIZE, PATCH_SIZE, WORDS, build_and_save
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaProcessor,
    VipLlavaConfig,
    VipLlavaForConditionalGeneration,
)

COMPONENTS = {
    "vision": ("vision", 4, 52),
    "projector": ("connector", 1, 36),
    "llm": ("llm", 2, 64),
}
UNUSED = {"vision": [3]}
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2  # CLS dropped


def build_tiny_vipllava(path: str | Path) -> Path:
    """VipLlava (CLIP + Llama) whose projector reads vision layers 0 and 2 of 4."""

    def build():
        config = VipLlavaConfig(
            vision_config=CLIPVisionConfig(
                hidden_size=24,
                intermediate_size=COMPONENTS["vision"][2],
                num_hidden_layers=COMPONENTS["vision"][1],
                num_attention_heads=2,
                image_size=IMAGE_SIZE,
                patch_size=PATCH_SIZE,
                projection_dim=24,
            ),
            text_config=LlamaConfig(
                vocab_size=len(SPECIAL_TOKENS) + len(WORDS),
                hidden_size=COMPONENTS["projector"][2],
                intermediate_size=COMPONENTS["llm"][2],
                num_hidden_layers=COMPONENTS["llm"][1],
                num_attention_heads=2,
                num_key_value_heads=2,
                max_position_embeddings=512,
                bos_token_id=BOS_ID,
                eos_token_id=EOS_ID,
                pad_token_id=PAD_ID,
                tie_word_embeddings=False,
            ),
            image_token_index=IMAGE_ID,
            vision_feature_layer=[-2, 1],  # hidden_states[-2]: layer 2's output; [1]: layer 0's
            image_seq_length=IMAGE_TOKENS,
        )
        image_processor = CLIPImageProcessorPil(
            size={"shortest_edge": IMAGE_SIZE},
            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        )
        processor = llava_processor(
            LlavaProcessor, image_processor, llm_tokenizer(WORDS), PATCH_SIZE
        )
        return VipLlavaForConditionalGeneration(config), processor

    return build_and_save(path, build)
