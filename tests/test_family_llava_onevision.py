"""LLaVA-OneVision beyond the conformance checks: AnyRes rows and tokens, the unused-layer
rule, the chat template that lmms-eval's llava_hf needs, and loglikelihood through it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from choices import choice_nll
from click.testing import CliRunner

from mmneuron_bench.cli import build_cli
from mmneuron_bench.domains.tasks import task_manager
from mmneuron_bench.lmms.evaluate import evaluate
from mmneuron_bench.lmms.model import MMNeuronLMM
from mmneuron_bench.lmms.workarounds import base_kwargs, import_base, string_content_template
from mmneuron_bench.models.adapter import IMAGE
from mmneuron_bench.models.compat import video_stand_in
from mmneuron_bench.models.loading import load_model
from mmneuron_bench.recording.recorder import ActivationRecorder
from mmneuron_bench.testing import tiny_image, write_tiny_task
from mmneuron_bench.testing.families.llava_onevision import IMAGE_ID, OFFICIAL_CHAT_TEMPLATE
from mmneuron_bench.testing.tasks import ANSWERS

PATCHES = 16  # 4 x 4 patches of 8 pixels per 32-pixel crop


@pytest.fixture(scope="module")
def onevision(tiny_checkpoint_dir):
    return load_model(str(tiny_checkpoint_dir["llava_onevision"]))


def _record(loaded, inputs) -> ActivationRecorder:
    components = loaded.adapter.resolve(loaded.model)
    recorder = ActivationRecorder(components, 1, "cpu")
    recorder.set_batch(0, loaded.adapter.positions(loaded.model, inputs))
    with recorder.hooks(), torch.inference_mode():
        loaded.model(**loaded.adapter.forward_kwargs(inputs))
    return recorder


def test_anyres_tokens_and_rows_of_images_of_different_sizes(onevision):
    """Per image: 16 base + the unpadded crop patches + one newline per crop row, all image
    positions; the vision rows are the real crops only (padded tile slots never run)."""
    images = [tiny_image(1, (32, 32)), tiny_image(2, (64, 32)), tiny_image(3, (40, 56))]
    questions = ["what color is the circle ?"] * 3
    inputs = onevision.adapter.build_inputs(onevision.processor, images, questions)
    tiles = [2, 3, 5]  # base + crops: 32 x 32 canvas, 32 x 64 (two crops), 64 x 64 (four)
    assert tuple(inputs["pixel_values"].shape[:2]) == (3, max(tiles))
    roles = onevision.adapter.token_roles(onevision.model, inputs)
    per_image = (roles == IMAGE).sum(-1).tolist()
    # 32 x 32: 16 + 16 + 4 newlines; 64 x 32: 16 + 32 + 4; 40 x 56 on a 64 x 64 canvas: the
    # 8 x 8 crop grid keeps round(40 * 8 / 56) = 6 of its columns (the rest is letterbox
    # padding), + 8 newlines.
    assert per_image == [36, 52, 16 + 8 * round(40 * 8 / 56) + 8]
    assert torch.equal(roles == IMAGE, inputs["input_ids"] == IMAGE_ID)
    recorded = _record(onevision, inputs)
    assert recorded.tokens["vision"][0].tolist() == [sum(tiles) * PATCHES] * 3
    assert recorded.tokens["projector"][0].tolist() == [sum(tiles) * PATCHES]
    # The LLM counts every real position; its image positions need the token scope.
    scoped = onevision.adapter.positions(onevision.model, inputs, "image")["llm"]
    assert int(scoped.sum()) == sum(per_image)


def test_unused_vision_layers_follow_vision_feature_layer(tiny_checkpoint_dir, tmp_path):
    """The llava-hf checkpoints read the last layer (-1): none unused; -2 leaves the last."""
    folder = tmp_path / "ov"
    shutil.copytree(tiny_checkpoint_dir["llava_onevision"], folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["vision_feature_layer"] == -1
    config["vision_feature_layer"] = -2
    (folder / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(build_cli(), ["adapters", "--pretrained", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["vision"]["unused_layers"] == [2]


def _prompts(base) -> list[str]:
    """The texts llava_hf builds: the tokenizer's chat template on string content."""
    messages = [{"role": "user", "content": "<image>\nwhat color is the circle ?"}]
    template = base.chat_template or base.tokenizer.chat_template
    return base.tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=True
    )


def test_llava_hf_gets_a_template_that_reads_string_content(tiny_checkpoint_dir):
    """The checkpoint's template (llava-hf's, typed content only) drops llava_hf's string
    content; base_kwargs passes the same template made to read it, as one text item."""
    path = str(tiny_checkpoint_dir["llava_onevision"])
    cls = import_base("llava_hf")
    with video_stand_in():
        base = cls(**base_kwargs(cls, {"pretrained": path, "device": "cpu"}))
    assert base.tokenizer.chat_template == OFFICIAL_CHAT_TEMPLATE
    plain = base.tokenizer.apply_chat_template(
        [{"role": "user", "content": "<image>\nwhat ?"}], tokenize=False
    )
    assert plain == "<|im_start|>user\n<|im_end|>\n"  # the trap: question and image gone
    assert _prompts(base) == (
        "<|im_start|>user\n<image>\nwhat color is the circle ?<|im_end|>\n<|im_start|>assistant\n"
    )
    typed = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q"}]}]
    assert base.tokenizer.apply_chat_template(
        typed, chat_template=base.chat_template, tokenize=False
    ) == base.tokenizer.apply_chat_template(typed, tokenize=False)
    # A template that reads strings already (LLaVA-NeXT's tiny) is left alone; so is a given one.
    assert string_content_template(str(tiny_checkpoint_dir["llava_next"])) is None
    given = base_kwargs(cls, {"pretrained": path, "chat_template": "{{ 'x' }}"})
    assert given["chat_template"] == "{{ 'x' }}"


def test_multiple_choice_through_llava_hf_is_scored_by_the_adapter(
    onevision, tiny_checkpoint_dir, tmp_path
):
    write_tiny_task(
        tmp_path, "ov_mc", n_docs=2, seed=4, image_sizes=((64, 32),), multiple_choice=True
    )
    path = tiny_checkpoint_dir["llava_onevision"]
    lm = MMNeuronLMM(pretrained=str(path), device="cpu")
    manager = task_manager(["ov_mc"], [str(tmp_path)], lm.base_name)
    samples = evaluate(lm, ["ov_mc"], manager)["samples"]["ov_mc"]
    for sample in samples:
        doc = lm.task_dict["ov_mc"]["test"][sample["doc_id"]]
        image = doc["image"].convert("RGB")
        expected = [
            choice_nll(onevision.processor, onevision.model, image, doc["question"], f" {c}")
            for c in ANSWERS
        ]
        got = [nll for nll, _greedy in sample["filtered_resps"]]
        assert got == pytest.approx(expected, rel=1e-5)
