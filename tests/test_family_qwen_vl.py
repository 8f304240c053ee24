"""What the conformance tests do not cover for Qwen2-VL, Qwen2.5-VL and Qwen3-VL: token roles
and scopes, 3-D rotary positions under left padding, the inputs lmms-eval's own models build,
loglikelihood, the lmms-eval traps and the mixture-of-experts refusal."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from mmneuron_bench.adapters.qwen2_vl import QwenVLAdapter
from mmneuron_bench.cli import build_cli
from mmneuron_bench.lmms.loglikelihood import continuation_nll
from mmneuron_bench.lmms.model import MMNeuronLMM
from mmneuron_bench.lmms.workarounds import base_kwargs, import_base
from mmneuron_bench.models.adapter import IMAGE, PAD, TEXT
from mmneuron_bench.models.compat import video_stand_in
from mmneuron_bench.models.loading import load_model
from mmneuron_bench.recording.recorder import ActivationRecorder
from mmneuron_bench.testing.checkpoints import tiny_image
from mmneuron_bench.testing.families.qwen_vl import (
    IMAGE_ID,
    SIZES,
    VISION_END_ID,
    VISION_START_ID,
)

NAMES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
QUESTIONS = ["what color is the circle ?", "is there a red square on the left of it ?", "why ?"]


@pytest.fixture(scope="module", params=NAMES)
def qwen(request, tiny_checkpoint_dir):
    path = tiny_checkpoint_dir[request.param]
    return {"name": request.param, "path": path, "loaded": load_model(str(path))}


def _batch(loaded, indices):
    images = [tiny_image(i, SIZES[i]) for i in indices]
    return loaded.adapter.build_inputs(loaded.processor, images, [QUESTIONS[i] for i in indices])


def test_token_roles_and_scopes_select_exactly_the_right_positions(qwen):
    loaded = qwen["loaded"]
    inputs = _batch(loaded, [0, 1, 2])
    ids, attention = inputs["input_ids"], inputs["attention_mask"]
    roles = loaded.adapter.token_roles(loaded.model, inputs)
    # image placeholders = the processor's own image token type; vision start/end are text
    assert torch.equal(roles == IMAGE, inputs["mm_token_type_ids"] == 1)
    assert torch.equal(roles == IMAGE, ids == IMAGE_ID)
    assert bool((roles[(ids == VISION_START_ID) | (ids == VISION_END_ID)] == TEXT).all())
    assert torch.equal(roles == PAD, attention == 0)
    assert bool((attention[:, -1] == 1).all()) and not bool(attention.all())  # left-padded
    # one image token per 2 x 2 patches of each image
    per_image = inputs["image_grid_thw"].prod(-1) // 4
    assert torch.equal((roles == IMAGE).sum(-1), per_image)
    for scope, role in (("image", IMAGE), ("text", TEXT)):
        kinds = loaded.adapter.positions(loaded.model, inputs, token_scope=scope)
        assert torch.equal(kinds["llm"], roles == role)
        assert kinds["all"] is None  # vision and connector rows are all real patches


def test_no_position_ids_and_a_padded_sample_equals_itself_alone(qwen):
    """The model builds its 3-D positions (M-RoPE) and skips padding: each sample's logits in
    a left-padded batch of images of different sizes are those it has alone."""
    loaded = qwen["loaded"]
    inputs = _batch(loaded, [0, 1, 2])
    assert "position_ids" not in loaded.adapter.forward_kwargs(inputs)
    with torch.inference_mode():
        batched = loaded.model(**loaded.adapter.forward_kwargs(inputs)).logits
        for b in range(3):
            alone_inputs = _batch(loaded, [b])
            alone = loaded.model(**loaded.adapter.forward_kwargs(alone_inputs)).logits[0]
            real = inputs["attention_mask"][b].bool()
            torch.testing.assert_close(batched[b, real], alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("scope", ["image", "text"])
def test_scoped_counts_do_not_depend_on_the_batch(qwen, scope):
    loaded = qwen["loaded"]
    components = loaded.adapter.resolve(loaded.model)

    def record(batches):
        recorder = ActivationRecorder(components, 1, "cpu")
        for indices in batches:
            inputs = _batch(loaded, indices)
            recorder.set_batch(0, loaded.adapter.positions(loaded.model, inputs, scope))
            with recorder.hooks(), torch.inference_mode():
                loaded.model(**loaded.adapter.forward_kwargs(inputs))
        return recorder

    alone, batched = record([[0], [1], [2]]), record([[0, 1, 2]])
    image_tokens = int(_batch(loaded, [0, 1, 2])["mm_token_type_ids"].eq(1).sum())
    for c in components:
        assert torch.equal(alone.active[c.name], batched.active[c.name]), c.name
        assert torch.equal(alone.tokens[c.name], batched.tokens[c.name]), c.name
    if scope == "image":
        assert int(batched.tokens["llm"][0, 0]) == image_tokens


def _base_generate_inputs(name, path, doc_image, question, **args):
    """The keyword arguments lmms-eval's own model gives ``generate`` for one request."""
    from lmms_eval.api.instance import Instance

    cls = import_base(name)
    with video_stand_in():
        base = cls(**base_kwargs(cls, {"pretrained": str(path), "device": "cpu", **args}))
    base.task_dict = {"t": {"test": [{"image": doc_image}]}}
    seen = {}

    def generate(**kwargs):
        seen.update(kwargs)
        return kwargs["input_ids"][:, :1].repeat(1, kwargs["input_ids"].shape[1] + 1)

    base.model.generate = generate
    gen = {"max_new_tokens": 1, "do_sample": False}
    arguments = (question, gen, lambda d: [d["image"]], 0, "t", "test")
    metadata = {"task": "t", "doc_id": 0, "repeats": 1}
    request = Instance("generate_until", arguments, 0, metadata)
    base.generate_until([request])
    return seen


def test_record_sees_the_inputs_lmms_evals_model_builds(qwen):
    """Same prompt, same resized (and for Qwen2/2.5-VL JPEG-compressed) image, same pixels:
    recording counts the tokens that evaluation with lmms-eval's defaults runs."""
    loaded = qwen["loaded"]
    image, question = tiny_image(7, (48, 32)), QUESTIONS[0]
    seen = _base_generate_inputs(qwen["name"], qwen["path"], image, question)
    ours = loaded.adapter.build_inputs(loaded.processor, [image], [question])
    for key in ("input_ids", "attention_mask", "mm_token_type_ids", "image_grid_thw"):
        assert torch.equal(ours[key], seen[key].cpu()), key
    torch.testing.assert_close(ours["pixel_values"], seen["pixel_values"].float(), rtol=0, atol=0)


def test_the_adapters_pixel_limits_are_lmms_evals_defaults():
    import inspect

    from mmneuron_bench.plugins.registry import get_registry

    for name in NAMES:
        adapter = get_registry().adapter(name)
        assert isinstance(adapter, QwenVLAdapter)
        params = inspect.signature(import_base(name).__init__).parameters
        assert params["min_pixels"].default == adapter.min_pixels, name
        assert params["max_pixels"].default == adapter.max_pixels, name
        assert params["system_prompt"].default == adapter.system_prompt, name


def test_loglikelihood_of_the_greedy_continuation(qwen):
    """The continuation's tokens get ``mm_token_type_ids`` too; its NLL equals the one of
    generate's own step-by-step scores (cache and rope deltas), and it is greedy."""
    loaded = qwen["loaded"]
    image, question = tiny_image(3, (40, 56)), QUESTIONS[1]
    inputs = loaded.adapter.build_inputs(loaded.processor, [image], [question])
    tokenizer = loaded.processor.tokenizer
    with torch.inference_mode():
        out = loaded.model.generate(
            **inputs, max_new_tokens=3, do_sample=False, output_scores=True,
            return_dict_in_generate=True,
        )  # fmt: skip
    new = out.sequences[0, inputs["input_ids"].shape[1] :]
    scores = torch.stack(out.scores)[:, 0].float().log_softmax(-1)
    expected = -float(scores.gather(-1, new[:, None]).sum())
    continuation = " " + tokenizer.decode(new)
    nll, greedy = continuation_nll(
        loaded.adapter, loaded.processor, loaded.model, image, question, continuation
    )
    assert greedy
    assert nll == pytest.approx(expected, abs=1e-4)


def test_loglikelihood_requests_run_through_the_wrapper(qwen):
    """lmms-eval's Qwen models have no loglikelihood; the wrapper's own scores it (its
    processor loads without torchvision)."""
    from lmms_eval.api.instance import Instance

    lm = MMNeuronLMM(pretrained=str(qwen["path"]), device="cpu")
    image = tiny_image(5, (32, 48))
    lm.task_dict = lm.base.task_dict = {"t": {"test": [{"image": image}]}}
    requests = [
        Instance(
            "loglikelihood",
            (QUESTIONS[0], f" {word}", lambda d: [d["image"]], 0, "t", "test"),
            i,
            {"task": "t", "doc_id": 0, "repeats": 1},
        )
        for i, word in enumerate(("red", "blue"))
    ]
    got = [r.text for r in lm.loglikelihood(requests)]
    expected = [
        continuation_nll(lm.adapter, lm._processor, lm.model, image, QUESTIONS[0], f" {word}")
        for word in ("red", "blue")
    ]
    assert got == expected and got[0] != got[1]


def test_qwen2_vl_batches_pad_left_whatever_the_tokenizer_says(tiny_checkpoint_dir, tmp_path):
    path = tmp_path / "right_padded"
    shutil.copytree(tiny_checkpoint_dir["qwen2_vl"], path)
    config = json.loads((path / "tokenizer_config.json").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps({**config, "padding_side": "right"}))
    lm = MMNeuronLMM(pretrained=str(path), device="cpu", batch_size=2)
    assert lm.base.processor.tokenizer.padding_side == "left"


def test_qwen3_vl_in_a_folder_named_like_a_moe_loads_the_dense_class(tiny_checkpoint_dir, tmp_path):
    path = tmp_path / "qwen3-vl-A1B-dense"
    shutil.copytree(tiny_checkpoint_dir["qwen3_vl"], path)
    lm = MMNeuronLMM(pretrained=str(path), device="cpu")
    assert type(lm.model).__name__ == "Qwen3VLForConditionalGeneration"


def test_a_dtype_the_base_cannot_take_is_dropped_and_the_model_cast(tiny_checkpoint_dir):
    path = str(tiny_checkpoint_dir["qwen2_vl"])
    assert MMNeuronLMM(pretrained=path, device="cpu", dtype="auto").model is not None
    lm = MMNeuronLMM(pretrained=path, device="cpu", dtype="bfloat16")
    assert {p.dtype for p in lm.model.parameters() if p.is_floating_point()} == {torch.bfloat16}


def test_mixture_of_experts_qwen3_vl_is_refused_in_one_line(tmp_path):
    from transformers import Qwen3VLMoeConfig

    Qwen3VLMoeConfig().save_pretrained(tmp_path)
    runner = CliRunner()
    for extra in ([], ["--model", "qwen3_vl"]):
        result = runner.invoke(build_cli(), ["adapters", "--pretrained", str(tmp_path), *extra])
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "mixture-of-experts Qwen3-VL is not supported" in lines[0]
        assert "qwen3_vl_moe" in lines[0]
