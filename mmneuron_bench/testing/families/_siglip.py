"""Shared pieces of the tiny SigLIP-tower checkpoints (Gemma 3, PaliGemma 2, Idefics3, SmolVLM).

Every tiny checkpoint has a SigLIP-style vision tower of 3 x 48 (hidden 24, 32 px, patch 8:
16 patches), no connector neurons, and a gated LLM of 2 x 80 (hidden 32), with a word-level
tokenizer over :data:`~mmneuron_bench.testing.checkpoints.WORDS` plus each family's special
tokens, left padding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from tokenizers import processors
from transformers import GenerationConfig, PreTrainedTokenizerFast, SiglipVisionConfig

from mmneuron_bench.synthetic.tokenizers import word_level
from mmneuron_bench.testing.checkpoints import WORDS, build_and_save

IMAGE_SIZE = 32  # vision tower input (and Idefics3 frame) size in pixels
PATCH_SIZE = 8  # 4 x 4 = 16 patches per image or frame
VISION = dict(hidden_size=24, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2)
LLM_WIDTH, LLM_LAYERS, LLM_HIDDEN = 80, 2, 32
# Words of the system prompts and chat roles (lmms-eval's gemma3 adds "You are a helpful
# assistant."), so that they are not all <unk>.
EXTRA_WORDS = tuple(w for w in "model you helpful".split() if w not in WORDS)


def tokenizer(
    specials: Sequence[str],
    bos: str,
    eos: str,
    pad: str,
    unk: str,
    extra: dict[str, str] | None = None,
    add_bos: bool = True,
    **kwargs,
) -> PreTrainedTokenizerFast:
    """Word-level tokenizer: ``specials`` then the words; ``bos`` prepended if ``add_bos``."""
    tok = word_level(tuple(specials), unk, tuple(WORDS) + EXTRA_WORDS)
    if add_bos:
        bos_id = list(specials).index(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=unk,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        padding_side="left",
        model_max_length=2048,
        extra_special_tokens=extra or {},
        **kwargs,
    )


def siglip(**overrides) -> SiglipVisionConfig:
    """SigLIP 3 x 48 at 32 px, patch 8, without the pooling head (as the real Gemma 3 and
    PaliGemma 2 configs: the head's MLP would run but never reach the LLM)."""
    return SiglipVisionConfig(
        **VISION, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, vision_use_head=False, **overrides
    )


def save(
    path: str | Path, build: Callable, specials: Sequence[str], bos: str, eos: str, pad: str
) -> Path:
    """``build_and_save``, then a greedy generation config with this family's token ids
    (``build_and_save`` writes those of its LLaVA tokenizer)."""
    path = build_and_save(path, build)
    ids = list(specials)
    GenerationConfig(
        do_sample=False,
        num_beams=1,
        bos_token_id=ids.index(bos),
        eos_token_id=ids.index(eos),
        pad_token_id=ids.index(pad),
    ).save_pretrained(path)
    return path
