"""Llama 3.2 Vision (``MllamaForConditionalGeneration``): local ViT 3 x 48, global ViT 2 x 48,
no connector neurons (one Linear), Llama 3 x 80 with layer 1 a cross-attention layer.

Images are cut into 16 px tiles (up to 4; 8 px patches: 4 patches + CLS = 5 rows a tile,
padded to 8), always padded to 4 tiles; the language model's sequence holds one ``<|image|>``
marker per image and sees the image only through its cross-attention layer. Both vision
encoders share the config's one ``intermediate_size``, so their widths cannot differ.

Full-size config ``meta-llama-Llama-3.2-11B-Vision-Instruct``: the vision config, the
cross-attention layers and the token ids are the config dump quoted in danbev/learning-ai
``notes/llama.cpp/llama-3-2-vision.md``; ``intermediate_layers_indices`` and ``rope_theta``
from test fixtures quoting the 11B config; the text sizes are transformers'
``MllamaTextConfig`` defaults (documented as that checkpoint's). Not verified, and without
effect on module shapes: ``rope_scaling`` and ``eos_token_id``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import processors
from transformers import (
    MllamaConfig,
    MllamaForConditionalGeneration,
    MllamaImageProcessorPil,
    MllamaProcessor,
    MllamaTextConfig,
    MllamaVisionConfig,
    PreTrainedTokenizerFast,
)

from mmneuron_bench.synthetic.tokenizers import word_level
from mmneuron_bench.testing.checkpoints import PATCH_SIZE, WORDS, build_and_save
from mmneuron_bench.testing.families import Family

# unk, bos, eos, pad first: the ids build_and_save's generation config uses (0-3).
SPECIALS = (
    "<unk>",
    "<|begin_of_text|>",
    "<|eot_id|>",
    "<|finetune_right_pad_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|end_of_text|>",
    "<|python_tag|>",
)
IMAGE_TOKEN = "<|image|>"
TILE = 16
MAX_TILES = 4
CROSS_ATTENTION_LAYERS = [1]
COMPONENTS = {
    "vision_local": ("vision", 3, 48),
    "vision_global": ("vision", 2, 48),
    "llm": ("llm", 3, 80),
}
# Rows of one tile in the vision encoders: patches + CLS, padded to a multiple of 8.
TILE_ROWS = (TILE // PATCH_SIZE) ** 2 + 1
PADDED_TILE_ROWS = TILE_ROWS + (8 - TILE_ROWS % 8) % 8

# Llama 3 style; `<|image|>` where the content has an image, as lmms-eval's llama_vision asks.
CHAT_TEMPLATE = (
    "<|begin_of_text|>"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|image|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def mllama_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level, ``<|begin_of_text|>`` prepended, left padding; ``<|image|>`` is the last id.

    As in the real checkpoints, the image token's id equals the text ``vocab_size``: it has an
    embedding (the embedding has ``vocab_size + 8`` rows) but the LM head cannot produce it.
    """
    tok = word_level(SPECIALS, "<unk>", (*WORDS, IMAGE_TOKEN))
    tok.add_special_tokens([IMAGE_TOKEN])
    bos = SPECIALS.index("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
    )


def build_tiny_mllama(path: str | Path) -> Path:
    """Llama 3.2 Vision with 16 px tiles; the cross-attention gates are set to 1 (their init
    leaves them at 0, and then the image has no effect at all on the language model)."""

    def build():
        tokenizer = mllama_tokenizer()
        image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        vision = MllamaVisionConfig(
            hidden_size=24,
            intermediate_size=COMPONENTS["vision_local"][2],
            num_hidden_layers=COMPONENTS["vision_local"][1],
            num_global_layers=COMPONENTS["vision_global"][1],
            attention_heads=2,
            image_size=TILE,
            patch_size=PATCH_SIZE,
            max_num_tiles=MAX_TILES,
            intermediate_layers_indices=[0, 2],
            vision_output_dim=24 * 3,  # hidden * (1 + len(intermediate_layers_indices))
        )
        text = MllamaTextConfig(
            vocab_size=image_id,  # the image token is outside the LM head, as in the real model
            hidden_size=40,
            intermediate_size=COMPONENTS["llm"][2],
            num_hidden_layers=COMPONENTS["llm"][1],
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=512,
            cross_attention_layers=CROSS_ATTENTION_LAYERS,
            initializer_range=0.2,  # large enough that switching neurons off moves answers
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        )
        config = MllamaConfig(vision_config=vision, text_config=text, image_token_index=image_id)
        model = MllamaForConditionalGeneration(config)
        with torch.no_grad():
            for i in CROSS_ATTENTION_LAYERS:
                layer = model.model.language_model.layers[i]
                layer.cross_attn_attn_gate.fill_(1.0)
                layer.cross_attn_mlp_gate.fill_(1.0)
        image_processor = MllamaImageProcessorPil(
            size={"height": TILE, "width": TILE}, max_image_tiles=MAX_TILES
        )
        processor = MllamaProcessor(image_processor, tokenizer, chat_template=CHAT_TEMPLATE)
        return model, processor

    return build_and_save(path, build)


def real_rows(component: str, layer: int, inputs, rows: torch.Tensor) -> torch.Tensor:
    """Rows of a batch-1 forward that are tokens, computed from the processor's outputs.

    Vision encoders: ``[images, tiles * 8, N]`` rows; a row is real when its tile is one of the
    image's tiles (``aspect_ratio_mask``) and it is not one of the 3 rows that pad a tile's
    5 to 8. The language model: every row, except in the cross-attention layer the rows before
    ``<|image|>``, whose MLP output the layer multiplies by 0.
    """
    if component.startswith("vision"):
        tiles = inputs["aspect_ratio_mask"].reshape(-1, MAX_TILES, 1).bool()
        in_tile = torch.arange(PADDED_TILE_ROWS) < TILE_ROWS
        return (tiles & in_tile).reshape(-1)
    if layer in CROSS_ATTENTION_LAYERS:
        ids = inputs["input_ids"][0]
        image_id = int(mllama_tokenizer().convert_tokens_to_ids(IMAGE_TOKEN))
        first = int((ids == image_id).nonzero()[0])
        return torch.arange(rows.shape[0]) >= first
    return torch.ones(rows.shape[0], dtype=torch.bool)


FAMILIES = [
    Family(
        "mllama",
        build_tiny_mllama,
        COMPONENTS,
        "llama_vision",
        # one tile, two tiles side by side, two tiles stacked
        image_sizes=((16, 16), (32, 16), (20, 36)),
        real_rows=real_rows,
        full_size={
            "meta-llama-Llama-3.2-11B-Vision-Instruct": {
                "vision_local": ("vision", 32, 5120),
                "vision_global": ("vision", 8, 5120),
                "llm": ("llm", 40, 14336),
            }
        },
    )
]
