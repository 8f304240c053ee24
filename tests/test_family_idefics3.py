"""Idefics3 and SmolVLM: image splitting (frames per sample, padding frames that never count),
token roles of the frame markup, SmolVLM's processor loaded without num2words and torchvision,
and no connector neurons."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.interventions.targets import check_module_set
from mmneuron_bench.models.adapter import IMAGE, TEXT
from mmneuron_bench.models.loading import load_model
from mmneuron_bench.recording.recorder import ActivationRecorder
from mmneuron_bench.testing import tiny_image

FAMILIES = ("idefics3", "smolvlm")
PATCHES = 16  # 32 px frames, patch 8
TOKENS = 4  # per frame, after the pixel shuffle


@pytest.fixture(scope="module", params=FAMILIES)
def loaded(request, tiny_checkpoint_dir):
    return load_model(str(tiny_checkpoint_dir[request.param]))


def _inputs(loaded, images):
    questions = ["what color is the circle ?"] * len(images)
    return loaded.adapter.build_inputs(loaded.processor, images, questions)


def test_frames_per_sample_and_token_roles(loaded):
    """A square image: 2 x 2 frames + a global one; a 2:1 image: 1 x 2 + 1 (padded to 5)."""
    inputs = _inputs(loaded, [tiny_image(1, (32, 32)), tiny_image(2, (64, 32))])
    assert inputs["pixel_values"].shape[:2] == (2, 5)
    real = inputs["pixel_values"].flatten(2).ne(0).any(-1)
    assert real.tolist() == [[True] * 5, [True] * 3 + [False] * 2]
    roles = loaded.adapter.token_roles(loaded.model, inputs)
    assert (roles == IMAGE).sum(-1).tolist() == [5 * TOKENS, 3 * TOKENS]
    tokenizer = loaded.processor.tokenizer
    for markup in ("<fake_token_around_image>", "<row_1_col_1>", "<global-img>"):
        where = inputs["input_ids"] == tokenizer.convert_tokens_to_ids(markup)
        assert where.any() and (roles[where] == TEXT).all(), markup


def test_padding_frames_never_count(loaded):
    """The batch's vision rows are its 8 real frames' patches: the model drops the padding
    frames before the tower. Alone or together, the same counts."""
    images = [tiny_image(3, (32, 32)), tiny_image(4, (64, 32))]
    components = loaded.adapter.resolve(loaded.model)
    vision = next(c for c in components if c.role == "vision")

    def record(batch):
        inputs = _inputs(loaded, batch)
        recorder = ActivationRecorder(components, 1, "cpu")
        recorder.set_batch(0, loaded.adapter.positions(loaded.model, inputs))
        with recorder.hooks(), torch.inference_mode():
            loaded.model(**loaded.adapter.forward_kwargs(inputs))
        return recorder

    together = record(images)
    alone = [record([image]) for image in images]
    assert together.tokens["vision"][0].tolist() == [(5 + 3) * PATCHES] * vision.info.layers
    for name in ("vision", "llm"):
        assert torch.equal(together.active[name], alone[0].active[name] + alone[1].active[name])
        assert torch.equal(together.tokens[name], alone[0].tokens[name] + alone[1].tokens[name])


def test_no_connector_neurons(loaded):
    with pytest.raises(MMNeuronError, match="has no connector neurons .*pixel shuffle"):
        check_module_set("connector", loaded.adapter)


def test_smolvlm_processor_without_num2words_and_torchvision(tiny_checkpoint_dir):
    """The tiny SmolVLM ships a SmolVLMProcessor, as real checkpoints do: the adapter loads it
    with stand-ins (plain AutoProcessor cannot, here), and video is refused."""
    from transformers import AutoProcessor

    from mmneuron_bench.models.compat import torchvision_missing

    path = tiny_checkpoint_dir["smolvlm"]
    loaded = load_model(str(path))
    assert type(loaded.processor).__name__ == "SmolVLMProcessor"
    assert loaded.processor.video_processor.num_frames == 64
    prompt = loaded.adapter.format_prompt(loaded.processor, "what color ?")
    assert prompt.startswith("User:<image>")
    if importlib.util.find_spec("num2words") is None or torchvision_missing():
        with pytest.raises((ImportError, ValueError, OSError)):
            AutoProcessor.from_pretrained(path)
    with pytest.raises(MMNeuronError, match="video"):
        loaded.processor.video_processor(videos=[])
