"""InternVL (HF-native) beyond the conformance checks: token roles and rows of the tiles, the
InternVL3 style (Qwen2 LLM), mixture-of-experts refused, the chat-only lmms-eval model."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from transformers import InternVLConfig, InternVLVisionConfig, Qwen3MoeConfig

from mmneuron_bench.cli import build_cli
from mmneuron_bench.domains.tasks import task_manager
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.lmms.evaluate import evaluate
from mmneuron_bench.lmms.model import MMNeuronLMM
from mmneuron_bench.models.adapter import IMAGE, TEXT
from mmneuron_bench.models.loading import load_model
from mmneuron_bench.recording.recorder import ActivationRecorder
from mmneuron_bench.testing import tiny_image, write_tiny_task
from mmneuron_bench.testing.families.internvl import SPECIALS, build_tiny_internvl

TOKENS_PER_TILE = 4  # 4 x 4 patches, 2 x 2 after the pixel shuffle
PATCHES = 16


def _cli(*args) -> object:
    return CliRunner(env={"COLUMNS": "200"}).invoke(build_cli(), [str(a) for a in args])


@pytest.fixture(scope="module")
def internvl(tiny_checkpoint_dir):
    return load_model(str(tiny_checkpoint_dir["internvl"]))


def test_tiles_tokens_and_rows(internvl):
    """Per image: <img> + 4 <IMG_CONTEXT> per tile + </img>; only the context tokens are image
    positions. Vision rows: 16 patches + CLS per tile; projector rows: one per image token."""
    images = [tiny_image(1, (32, 32)), tiny_image(2, (64, 32)), tiny_image(3, (40, 72))]
    inputs = internvl.adapter.build_inputs(internvl.processor, images, ["what shape ?"] * 3)
    tiles = [1, 3, 3]  # one tile; two tiles and a thumbnail; two tiles and a thumbnail
    assert inputs["pixel_values"].shape[0] == sum(tiles)  # no padding: tiles concatenated
    roles = internvl.adapter.token_roles(internvl.model, inputs)
    assert (roles == IMAGE).sum(-1).tolist() == [TOKENS_PER_TILE * t for t in tiles]
    ids = inputs["input_ids"]
    for marker in ("<img>", "</img>"):
        where = ids == SPECIALS.index(marker)
        assert where.sum(-1).tolist() == [1, 1, 1] and bool((roles[where] == TEXT).all())
    components = internvl.adapter.resolve(internvl.model)
    recorder = ActivationRecorder(components, 1, "cpu")
    recorder.set_batch(0, internvl.adapter.positions(internvl.model, inputs))
    with recorder.hooks(), torch.inference_mode():
        internvl.model(**internvl.adapter.forward_kwargs(inputs))
    assert recorder.tokens["vision"][0].tolist() == [sum(tiles) * (PATCHES + 1)] * 3
    assert recorder.tokens["projector"][0].tolist() == [int((roles == IMAGE).sum())]


def test_the_internvl3_style_with_a_qwen2_llm(tmp_path):
    path = build_tiny_internvl(tmp_path / "internvl3", qwen2=True)
    assert json.loads((path / "config.json").read_text())["text_config"]["model_type"] == "qwen2"
    result = _cli("adapters", "--pretrained", path, "--check", "--json")
    assert result.exit_code == 0, result.output
    listed = {n: (c["role"], c["layers"], c["width"]) for n, c in json.loads(result.stdout).items()}
    assert listed == {
        "vision": ("vision", 3, 48),
        "projector": ("connector", 1, 40),
        "llm": ("llm", 2, 80),
    }


def test_a_mixture_of_experts_llm_is_refused_in_one_line(tmp_path):
    """InternVL3.5-30B-A3B and larger: the experts share one activation module."""
    config = InternVLConfig(
        vision_config=InternVLVisionConfig(
            hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2
        ),
        text_config=Qwen3MoeConfig(
            hidden_size=40, intermediate_size=80, moe_intermediate_size=16, num_experts=4,
            num_experts_per_tok=2, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=1, vocab_size=64,
        ),
    )  # fmt: skip
    config.save_pretrained(tmp_path / "moe")
    result = _cli("adapters", "--pretrained", tmp_path / "moe")
    assert result.exit_code == 1
    assert "language model (qwen3_moe) is a mixture of 4 experts" in result.output
    assert "Traceback" not in result.output


def test_internvl_hf_is_a_chat_model_that_cannot_take_loglikelihood_tasks(
    tiny_checkpoint_dir, tmp_path, monkeypatch
):
    """The wrapper takes internvl_hf's chat class and its request format; a multiple-choice
    task is refused up front, naming the task and the base (lmms-eval asserts otherwise);
    ``run`` refuses it before loading the model."""
    write_tiny_task(tmp_path, "iv_mc", n_docs=2, seed=4, multiple_choice=True)
    path = tiny_checkpoint_dir["internvl"]
    lm = MMNeuronLMM(pretrained=str(path), device="cpu", dtype="float32")
    assert lm.base_name == "internvl_hf" and lm.is_simple is False
    assert type(lm.base).__name__ == "InternVLHf" and lm.base.is_simple is False
    # internvl_hf loads bfloat16 whatever dtype says: the wrapper casts to the dtype asked.
    assert lm.model.dtype == torch.float32
    manager = task_manager(["iv_mc"], [str(tmp_path)], lm.base_name)
    message = "task 'iv_mc' is a multiple_choice task, but lmms-eval model 'internvl_hf' is a chat"
    with pytest.raises(MMNeuronError, match=message):
        evaluate(lm, ["iv_mc"], manager)
    monkeypatch.setattr(MMNeuronLMM, "__init__", lambda *a, **k: pytest.fail("model loaded"))
    result = _cli("run", "--pretrained", path, "--tasks", "iv_mc", "--include-path", tmp_path,
                  "--output", tmp_path / "run")  # fmt: skip
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
