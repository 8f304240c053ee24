"""BLIP-2 (``Blip2ForConditionalGeneration``): ViT 3 x 48, Q-Former query FFN 2 x 44, OPT
2 x 72; and a variant with a Llama language model (2 x 80), which no public checkpoint has.

The tokenizer pads on the right, as the real checkpoints' do (the adapter builds left-padded
inputs). Images of any size are resized to 32 px.

Full-size config ``Salesforce-blip2-opt-2.7b``: a config.json dump of that checkpoint
(transformers 4.47.0.dev0); its vision and Q-Former sizes are the ``Blip2VisionConfig`` and
``Blip2QFormerConfig`` defaults the file relies on (39 x 1408 / 6144, 12 x 768 / 3072).
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    Blip2QFormerConfig,
    Blip2VisionConfig,
    BlipImageProcessorPil,
    LlamaConfig,
    OPTConfig,
)

from mmneuron_bench.synthetic.tokenizers import (
    BOS_ID,
    EOS_ID,
    IMAGE_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    llm_tokenizer,
)
from mmneuron_bench.testing.checkpoints import IMAGE_SIZE, PATCH_SIZE, WORDS, build_and_save
from mmneuron_bench.testing.families import Family

NUM_QUERY_TOKENS = 8
COMPONENTS = {
    "vision": ("vision", 3, 48),
    "qformer_query": ("connector", 2, 44),
    "llm": ("llm", 2, 72),
}
LLAMA_COMPONENTS = {**COMPONENTS, "llm": ("llm", 2, 80)}
_TEXT = {
    "vocab_size": len(SPECIAL_TOKENS) + len(WORDS),
    "hidden_size": 40,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "max_position_embeddings": 512,
    "bos_token_id": BOS_ID,
    "eos_token_id": EOS_ID,
    "pad_token_id": PAD_ID,
    "initializer_range": 0.2,  # large enough that switching neurons off moves answers
}


def _build(path: str | Path, text_config) -> Path:
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
                encoder_hidden_size=24,
            ),
            text_config=text_config,
            num_query_tokens=NUM_QUERY_TOKENS,
            image_token_index=IMAGE_ID,
        )
        tokenizer = llm_tokenizer(WORDS)
        tokenizer.padding_side = "right"  # as Salesforce/blip2-* pad
        processor = Blip2Processor(
            image_processor=BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
            tokenizer=tokenizer,
            num_query_tokens=NUM_QUERY_TOKENS,
        )
        return Blip2ForConditionalGeneration(config), processor

    return build_and_save(path, build)


def build_tiny_blip2(path: str | Path) -> Path:
    """BLIP-2 with OPT: NUM_QUERY_TOKENS image tokens per image."""
    text = OPTConfig(**_TEXT, ffn_dim=COMPONENTS["llm"][2], word_embed_proj_dim=40)
    return _build(path, text)


def build_tiny_blip2_llama(path: str | Path) -> Path:
    """BLIP-2 with a Llama language model (gated MLP, rotary positions)."""
    text = LlamaConfig(
        **_TEXT,
        intermediate_size=LLAMA_COMPONENTS["llm"][2],
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    return _build(path, text)


FAMILIES = [
    Family(
        "blip2",
        build_tiny_blip2,
        COMPONENTS,
        None,
        image_sizes=((32, 32), (48, 24)),
        full_size={
            "Salesforce-blip2-opt-2.7b": {
                "vision": ("vision", 39, 6144),
                "qformer_query": ("connector", 12, 3072),
                "llm": ("llm", 32, 10240),
            }
        },
    )
]
