"""Tiny offline checkpoints of real multimodal architectures, saved and loaded the normal HF way.

Every component has its own layer count and MLP width so tests can tell them apart:

| family | vision | connector | llm |
|---|---|---|---|
| LLaVA-NeXT, LLaVA-1.5 | CLIP 3 x 48 | projector 1 x 40 | Llama 2 x 80 |
| InstructBLIP | 3 x 48 | Q-Former query 4 x 56, text 4 x 56 | Llama 2 x 80 |

(The Q-Former config has one `intermediate_size`, shared by its query and text MLPs.)
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from tokenizers import processors
from transformers import (
    BlipImageProcessorPil,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    GenerationConfig,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    InstructBlipQFormerConfig,
    InstructBlipVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaProcessor,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ProcessorMixin,
)

from mmneuron_bench.synthetic.tokenizers import (
    BOS_ID,
    EOS_ID,
    IMAGE_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    llava_processor,
    llm_tokenizer,
    word_level,
)

SEED = 0
IMAGE_SIZE = 32
PATCH_SIZE = 8
NUM_QUERY_TOKENS = 6

QFORMER_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
WORDS = (
    "user assistant system what which how many is are there the a an of in on this that it "
    "image picture photo color colour shape circle square triangle red green blue yellow black "
    "white left right top bottom object count answer question with single word or phrase "
    "yes no true false".split()
    + list("0123456789")
    + list("?:.,!'")
)


def tiny_image(seed: int, size: int | tuple[int, int] = IMAGE_SIZE) -> Image.Image:
    """A deterministic RGB noise image of ``size`` (pixels a side, or ``(width, height)``)."""
    width, height = (size, size) if isinstance(size, int) else size
    pixels = random.Random(seed).randbytes(width * height * 3)
    return Image.frombytes("RGB", (width, height), pixels)


def _qformer_tokenizer() -> PreTrainedTokenizerFast:
    """BERT-like: `[CLS] ... [SEP]`, `[PAD]` = 0, right padding."""
    tok = word_level(QFORMER_SPECIAL_TOKENS, "[UNK]", WORDS)
    cls_id, sep_id = QFORMER_SPECIAL_TOKENS.index("[CLS]"), QFORMER_SPECIAL_TOKENS.index("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )


def _llama_config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(SPECIAL_TOKENS) + len(WORDS),
        hidden_size=40,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        tie_word_embeddings=False,
    )


def _clip_vision_config() -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=24,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=24,
    )


def build_and_save(
    path: str | Path, build: Callable[[], tuple[PreTrainedModel, ProcessorMixin]]
) -> Path:
    """Build model and processor under a fixed seed (caller's RNG untouched) and save both."""
    path = Path(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model, processor = build()
    model.generation_config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def build_tiny_llava_next(path: str | Path) -> Path:
    """LLaVA-NeXT (CLIP + Llama) with one pinpoint: 4*4 + 4*5 = 36 image tokens per image."""

    def build():
        config = LlavaNextConfig(
            vision_config=_clip_vision_config(),
            text_config=_llama_config(),
            image_token_index=IMAGE_ID,
            image_grid_pinpoints=[[IMAGE_SIZE, IMAGE_SIZE]],
            image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        )
        image_processor = LlavaNextImageProcessorPil(
            size={"shortest_edge": IMAGE_SIZE},
            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
            image_grid_pinpoints=[[IMAGE_SIZE, IMAGE_SIZE]],
        )
        processor = llava_processor(
            LlavaNextProcessor, image_processor, llm_tokenizer(WORDS), PATCH_SIZE
        )
        return LlavaNextForConditionalGeneration(config), processor

    return build_and_save(path, build)


def build_tiny_llava(path: str | Path) -> Path:
    """LLaVA-1.5 (CLIP + Llama): 4*4 = 16 image tokens per image (CLS dropped)."""

    def build():
        config = LlavaConfig(
            vision_config=_clip_vision_config(),
            text_config=_llama_config(),
            image_token_index=IMAGE_ID,
            image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        )
        image_processor = CLIPImageProcessorPil(
            size={"shortest_edge": IMAGE_SIZE},
            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        )
        processor = llava_processor(
            LlavaProcessor, image_processor, llm_tokenizer(WORDS), PATCH_SIZE
        )
        return LlavaForConditionalGeneration(config), processor

    return build_and_save(path, build)


def build_tiny_instructblip(path: str | Path) -> Path:
    """InstructBLIP (ViT + Q-Former + Llama): NUM_QUERY_TOKENS image tokens per image."""

    def build():
        config = InstructBlipConfig(
            vision_config=InstructBlipVisionConfig(
                hidden_size=24,
                intermediate_size=48,
                num_hidden_layers=3,
                num_attention_heads=2,
                image_size=IMAGE_SIZE,
                patch_size=PATCH_SIZE,
                initializer_range=0.02,  # the default (1e-10) leaves every activation at 0
            ),
            qformer_config=InstructBlipQFormerConfig(
                vocab_size=len(QFORMER_SPECIAL_TOKENS) + len(WORDS),
                hidden_size=32,
                intermediate_size=56,
                num_hidden_layers=4,
                num_attention_heads=2,
                max_position_embeddings=512,
            ),
            text_config=_llama_config(),
            num_query_tokens=NUM_QUERY_TOKENS,
            image_token_index=IMAGE_ID,
        )
        processor = InstructBlipProcessor(
            image_processor=BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
            tokenizer=llm_tokenizer(WORDS),
            qformer_tokenizer=_qformer_tokenizer(),
            num_query_tokens=NUM_QUERY_TOKENS,
        )
        return InstructBlipForConditionalGeneration(config), processor

    return build_and_save(path, build)
