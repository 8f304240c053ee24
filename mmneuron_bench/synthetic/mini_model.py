"""The miniature LLaVA-NeXT model organism, trained on the synthetic domains and shipped.

A real ``LlavaNextForConditionalGeneration`` (CLIP vision tower 3 x 256, projector 1 x 128,
Llama 3 x 512) of about 1 M parameters, with a word-level tokenizer over the synthetic
domains' vocabulary and a real ``LlavaNextProcessor``, so it loads through
``from_pretrained`` and through lmms-eval's ``llava_hf`` like any other checkpoint.
``scripts/train_mini_model.py`` retrains it from its seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    PreTrainedTokenizerFast,
)

from mmneuron_bench.synthetic.drawing import IMAGE_SIZE
from mmneuron_bench.synthetic.generate import DOMAINS, questions
from mmneuron_bench.synthetic.tokenizers import (
    BOS_ID,
    EOS_ID,
    IMAGE_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    llava_processor,
    llm_tokenizer,
)

PATCH_SIZE = 8
MINI_MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "mini_llava_next"
CHAT_WORDS = ("user", "assistant", ":")


def vocabulary() -> tuple[str, ...]:
    """The words the tokenizer knows: the chat template's, every synthetic Q and A word and
    the context task's words (its hints)."""
    from mmneuron_bench.synthetic.context import words as context_words

    words = context_words()
    for domain in DOMAINS:
        for question in questions(domain):
            words.update(question.text.split())
            words.update(question.answers)
    return CHAT_WORDS + tuple(sorted(words - set(CHAT_WORDS)))


def mini_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level over :func:`vocabulary`, Llama-like: ``<s>`` prepended, left padding."""
    return llm_tokenizer(vocabulary(), model_max_length=256)


def mini_processor() -> LlavaNextProcessor:
    """LLaVA-NeXT processor with one pinpoint (the vision size): 4*4 + 4*5 = 36 image tokens."""
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_grid_pinpoints=[[IMAGE_SIZE, IMAGE_SIZE]],
    )
    return llava_processor(LlavaNextProcessor, image_processor, mini_tokenizer(), PATCH_SIZE)


def mini_config() -> LlavaNextConfig:
    """CLIP 64 hidden / 256 MLP / 3 layers at 32 px, Llama 128 hidden / 512 MLP / 3 layers."""
    return LlavaNextConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=3,
            num_attention_heads=4,
            image_size=IMAGE_SIZE,
            patch_size=PATCH_SIZE,
            projection_dim=64,
        ),
        text_config=LlamaConfig(
            vocab_size=len(SPECIAL_TOKENS) + len(vocabulary()),
            hidden_size=128,
            intermediate_size=512,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=256,
            bos_token_id=BOS_ID,
            eos_token_id=EOS_ID,
            pad_token_id=PAD_ID,
            tie_word_embeddings=False,
        ),
        image_token_index=IMAGE_ID,
        image_grid_pinpoints=[[IMAGE_SIZE, IMAGE_SIZE]],
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
    )


def new_mini_model(seed: int) -> LlavaNextForConditionalGeneration:
    """The untrained model, initialised from ``seed`` (the caller's RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlavaNextForConditionalGeneration(mini_config())


def load_mini_model(path: str | Path = MINI_MODEL_DIR) -> tuple[Any, Any]:
    """The trained model (eval mode) and its processor, through ``from_pretrained``."""
    from transformers import AutoProcessor

    model = LlavaNextForConditionalGeneration.from_pretrained(path).eval()
    return model, AutoProcessor.from_pretrained(path)


@torch.no_grad()
def answer(model: Any, processor: Any, images: list, texts: list[str]) -> list[str]:
    """Greedy answers to one question per image, prompted as the llava_next adapter does."""
    from mmneuron_bench.plugins.registry import get_registry

    inputs = get_registry().adapter("llava_next").build_inputs(processor, images, texts)
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    return processor.tokenizer.batch_decode(
        out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
    )


def accuracy_by_domain(
    model: Any, processor: Any, split: str = "eval", limit: int | None = None, batch: int = 120
) -> dict[str, float]:
    """Exact-match accuracy per synthetic domain on the first ``limit`` samples of ``split``."""
    from mmneuron_bench.synthetic.cache import load_split
    from mmneuron_bench.synthetic.scoring import is_correct

    accuracy = {}
    for domain in DOMAINS:
        data = load_split(domain, split)
        data = data.select(range(min(limit, len(data)))) if limit is not None else data
        correct = 0
        for start in range(0, len(data), batch):
            rows = data[start : start + batch]
            predictions = answer(model, processor, rows["image"], rows["question"])
            correct += sum(map(is_correct, predictions, rows["answer"]))
        accuracy[domain] = correct / len(data)
    return accuracy


def context_accuracy(
    model: Any, processor: Any, split: str = "eval", limit: int | None = None, batch: int = 120
) -> dict[str, float]:
    """Exact-match accuracy per condition of the context task (the first ``limit`` samples
    of ``split``), and ``conflict_image``: how often a conflict is answered with the image's
    colour instead of the hint's."""
    from mmneuron_bench.synthetic.context import CONDITIONS, load_context_split
    from mmneuron_bench.synthetic.scoring import is_correct

    data = load_context_split(split)
    data = data.select(range(min(limit, len(data)))) if limit is not None else data
    correct = dict.fromkeys(CONDITIONS, 0)
    totals = dict.fromkeys(CONDITIONS, 0)
    image = 0
    for start in range(0, len(data), batch):
        rows = data[start : start + batch]
        predictions = answer(model, processor, rows["image"], rows["prompt"])
        for said, gold, seen, condition in zip(
            predictions, rows["answer"], rows["image_answer"], rows["condition"], strict=True
        ):
            totals[condition] += 1
            correct[condition] += is_correct(said, gold)
            image += condition == "conflict" and is_correct(said, seen)
    out = {c: correct[c] / totals[c] for c in CONDITIONS if totals[c]}
    if totals["conflict"]:
        out["conflict_image"] = image / totals["conflict"]
    return out
