"""Tests for mmneuron_bench.testing.checkpoints: tiny real checkpoints load, run, rebuild alike."""

from __future__ import annotations

import inspect
import os

import datasets
import huggingface_hub
import pytest
import torch
from transformers import (
    AutoProcessor,
    InstructBlipForConditionalGeneration,
    LlavaForConditionalGeneration,
    LlavaNextForConditionalGeneration,
)

from mmneuron_bench.synthetic.tokenizers import EOS_ID, IMAGE_ID, PAD_ID
from mmneuron_bench.testing import tiny_image
from mmneuron_bench.testing.families import families

MODEL_CLASSES = {
    "llava_next": LlavaNextForConditionalGeneration,
    "llava": LlavaForConditionalGeneration,
    "instructblip": InstructBlipForConditionalGeneration,
}
LLAVA_PROMPTS = [
    "USER: <image>\nWhat color is the circle? ASSISTANT:",
    "USER: <image>\nHow many? ASSISTANT:",
]
# InstructBLIP's processor puts the image tokens in front of the prompt itself.
PROMPTS = {
    "llava_next": LLAVA_PROMPTS,
    "llava": LLAVA_PROMPTS,
    "instructblip": ["What color is the circle?", "How many?"],
}
# g = 32 px / patch 8 = 4: LLaVA-NeXT g*g + g*(g+1), LLaVA g*g, InstructBLIP num_query_tokens.
IMAGE_TOKENS = {"llava_next": 36, "llava": 16, "instructblip": 6}
FAMILIES = sorted(MODEL_CLASSES)


def _load(path, family):
    model = MODEL_CLASSES[family].from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    images = [tiny_image(0), tiny_image(1)]
    inputs = processor(images=images, text=PROMPTS[family], padding=True, return_tensors="pt")
    return model, processor, inputs


def _features_per_image(model, inputs) -> list[int]:
    """How many embeddings the model produces for each image, i.e. how many tokens it fills."""
    wanted = inspect.signature(model.get_image_features).parameters
    kwargs = {k: v for k, v in inputs.items() if k in wanted}
    with torch.no_grad():
        features = model.get_image_features(**kwargs, return_dict=True).pooler_output
    return [len(f) for f in features]


def _distinct(values) -> bool:
    return len(set(values)) == len(values)


def test_registry_names_families():
    assert FAMILIES == ["instructblip", "llava", "llava_next"]


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_is_small(tiny_checkpoint_dir, family):
    files = [f for f in tiny_checkpoint_dir[family].rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) < 1_000_000


@pytest.mark.parametrize("family", FAMILIES)
def test_processor_expands_image_tokens(tiny_checkpoint_dir, family):
    model, processor, inputs = _load(tiny_checkpoint_dir[family], family)
    assert processor.tokenizer.padding_side == "left"
    assert model.config.image_token_id == IMAGE_ID
    per_row = (inputs["input_ids"] == IMAGE_ID).sum(dim=1).tolist()
    assert per_row == [IMAGE_TOKENS[family]] * 2
    assert _features_per_image(model, inputs) == per_row
    padding = inputs["input_ids"] == PAD_ID
    assert padding[1].any() and not padding[0].any()
    assert torch.equal(inputs["attention_mask"] == 0, padding)


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_and_greedy_generate(tiny_checkpoint_dir, family):
    model, processor, inputs = _load(tiny_checkpoint_dir[family], family)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (*inputs["input_ids"].shape, len(processor.tokenizer))
    assert torch.isfinite(logits).all()

    config = model.generation_config
    assert (config.do_sample, config.pad_token_id, config.eos_token_id) == (False, PAD_ID, EOS_ID)
    prompt_length = inputs["input_ids"].shape[1]
    first = model.generate(**inputs, max_new_tokens=3)
    assert torch.equal(first[:, :prompt_length], inputs["input_ids"])
    assert prompt_length < first.shape[1] <= prompt_length + 3
    assert torch.equal(model.generate(**inputs, max_new_tokens=3), first)


@pytest.mark.parametrize("family", FAMILIES)
def test_components_have_distinct_shapes(tiny_checkpoint_dir, family):
    config = MODEL_CLASSES[family].config_class.from_pretrained(tiny_checkpoint_dir[family])
    vision, text = config.vision_config, config.text_config
    if family == "instructblip":
        # The Q-Former's query and text MLPs share one `intermediate_size`.
        connector = config.qformer_config.num_hidden_layers, config.qformer_config.intermediate_size
    else:
        connector = 1, text.hidden_size
    shapes = [
        (vision.num_hidden_layers, vision.intermediate_size),
        connector,
        (text.num_hidden_layers, text.intermediate_size),
    ]
    assert _distinct([layers for layers, _ in shapes])
    assert _distinct([width for _, width in shapes])


@pytest.mark.parametrize("family", FAMILIES)
def test_builds_are_deterministic(tmp_path, family):
    state = torch.random.get_rng_state()
    first = families()[family].build(tmp_path / "first")
    second = families()[family].build(tmp_path / "second")
    assert torch.equal(torch.random.get_rng_state(), state)
    files = sorted(f.relative_to(first) for f in first.rglob("*") if f.is_file())
    assert files == sorted(f.relative_to(second) for f in second.rglob("*") if f.is_file())
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_tiny_image_is_deterministic():
    image = tiny_image(3)
    assert (image.mode, image.size) == ("RGB", (32, 32))
    assert image.tobytes() == tiny_image(3).tobytes() != tiny_image(4).tobytes()
    assert tiny_image(3, size=20).size == (20, 20)


def test_plugin_keeps_hubs_offline():
    assert os.environ["HF_HUB_OFFLINE"] == os.environ["HF_DATASETS_OFFLINE"] == "1"
    assert huggingface_hub.constants.HF_HUB_OFFLINE
    assert datasets.config.HF_HUB_OFFLINE
