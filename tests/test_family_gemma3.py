"""Gemma 3: one ``<bos>``, one image list per sample, ``token_type_ids`` in every forward (and in
loglikelihood), the lmms-eval base's dtype, and a connector without neurons answered clearly
by ``run``, the grid, the analyses and the ``mmneuron`` lmms-eval model."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from mmneuron_bench.cli import build_cli
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.lmms.loglikelihood import continuation_nll
from mmneuron_bench.lmms.model import MMNeuronLMM
from mmneuron_bench.lmms.workarounds import base_kwargs, import_base
from mmneuron_bench.models.adapter import IMAGE, PAD, TEXT
from mmneuron_bench.models.loading import load_model, model_identity
from mmneuron_bench.testing import tiny_image, write_tiny_task

TASKS = ("g3_common_a", "g3_medical_b")


def _cli(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(build_cli(), [str(a) for a in args])


@pytest.fixture(scope="module")
def path(tiny_checkpoint_dir):
    return tiny_checkpoint_dir["gemma3"]


@pytest.fixture(scope="module")
def loaded(path):
    return load_model(str(path))


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    root = tmp_path_factory.mktemp("gemma3_tasks")
    for seed, name in enumerate(TASKS, start=1):
        write_tiny_task(root, name, n_docs=2, seed=seed)
    return root


@pytest.fixture(scope="module")
def mask_path(loaded, tmp_path_factory):
    components = loaded.adapter.resolve(loaded.model)
    generator = torch.Generator().manual_seed(3)
    masks = {
        (d, c.name): torch.rand(c.info.layers, c.info.width, generator=generator) < 0.3
        for d in ("common", "medical")
        for c in components
    }
    infos = {c.name: c.info for c in components}
    model = model_identity(loaded, "x")
    path = tmp_path_factory.mktemp("gemma3_mask") / "g.mask.safetensors"
    NeuronMask(["common", "medical"], infos, model, "random", {}, None, masks).save(path)
    return path


def test_inputs_have_one_bos_one_image_list_per_sample_and_token_types(loaded):
    processor = loaded.processor
    images = [tiny_image(1), tiny_image(2, (48, 24))]
    inputs = loaded.adapter.build_inputs(processor, images, ["what color ?", "is it red ?"])
    assert inputs["pixel_values"].shape[0] == 2
    bos = processor.tokenizer.bos_token_id
    roles = loaded.adapter.token_roles(loaded.model, inputs)
    for row, mask in zip(inputs["input_ids"], inputs["attention_mask"], strict=True):
        real = row[mask.bool()]
        assert real[0] == bos and int((real == bos).sum()) == 1
    soft = inputs["input_ids"] == loaded.model.config.image_token_id
    assert soft.sum(-1).tolist() == [4, 4]
    # token_type_ids mark the soft tokens (bidirectional attention); boi/eoi are text.
    assert torch.equal(inputs["token_type_ids"].bool(), soft)
    assert torch.equal(roles == IMAGE, soft)
    boi = inputs["input_ids"] == loaded.model.config.boi_token_index
    assert (roles[boi] == TEXT).all() and ((roles == PAD) == (inputs["attention_mask"] == 0)).all()
    assert "token_type_ids" in loaded.adapter.forward_kwargs(inputs)


def test_token_types_change_the_forward(loaded):
    """Without token_type_ids the image attention is causal: the states differ. Every forward
    of the tool passes them through (build_inputs -> forward_kwargs)."""
    inputs = loaded.adapter.build_inputs(loaded.processor, [tiny_image(3)], ["what shape ?"])
    kwargs = loaded.adapter.forward_kwargs(inputs)
    with torch.inference_mode():
        kept = loaded.model(**kwargs).logits
        dropped = loaded.model(**{k: v for k, v in kwargs.items() if k != "token_type_ids"}).logits
    assert not torch.allclose(kept, dropped)


def test_loglikelihood_equals_the_processors_own_prompt_plus_continuation(loaded):
    """The continuation is appended with token type 0 (text); the processor, given prompt +
    continuation as one text, builds the same input."""
    processor, image = loaded.processor, tiny_image(4)
    prompt = loaded.adapter.format_prompt(processor, "what color is the circle ?")
    nll, _ = continuation_nll(
        loaded.adapter, processor, loaded.model, image, "what color is the circle ?", " red"
    )
    whole = processor(
        images=[[image]], text=[prompt + " red"], return_tensors="pt", add_special_tokens=False
    )
    with torch.inference_mode():
        logits = loaded.model(**whole).logits
    red = processor.tokenizer.convert_tokens_to_ids("red")
    assert whole["input_ids"][0, -1] == red and whole["token_type_ids"][0, -1] == 0
    expected = -logits[0, -2].float().log_softmax(-1)[red]
    assert nll == pytest.approx(float(expected), abs=1e-5)


def test_lmms_eval_gemma3_gets_no_dtype_and_the_model_is_cast(path):
    cls = import_base("gemma3")
    args = {"pretrained": "p", "device": "cpu", "dtype": "float32"}
    assert base_kwargs(cls, args) == {"pretrained": "p", "device": "cpu", "device_map": "cpu"}
    lm = MMNeuronLMM(pretrained=path, device="cpu", dtype="bfloat16")
    assert {p.dtype for p in lm.model.parameters() if p.is_floating_point()} == {torch.bfloat16}


def test_adapters_says_there_are_no_connector_neurons(path):
    result = _cli("adapters", "--pretrained", path)
    assert result.exit_code == 0, result.output
    assert "no connector neurons: model.multi_modal_projector" in result.output


@pytest.mark.parametrize("modules", ["connector", "vision+connector"])
def test_run_modules_connector_is_refused_in_one_line(path, tasks, mask_path, modules, tmp_path):
    out = tmp_path / "r"
    result = _cli("run", "--pretrained", path, "--mask", mask_path, "--modules", modules,
                  "--tasks", TASKS[0], "--include-path", tasks, "--output", out)  # fmt: skip
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and f"module set '{modules}'" in line
    assert "adapter 'gemma3' has no connector neurons" in line
    assert not out.exists()


def test_lmms_eval_modules_connector_is_refused(path, mask_path):
    with pytest.raises(MMNeuronError, match="has no connector neurons"):
        MMNeuronLMM(pretrained=str(path), device="cpu", mask=str(mask_path), modules="connector")


def test_grid_leaves_the_connector_row_out_with_a_note(path, tasks, mask_path, tmp_path):
    out = tmp_path / "grid"
    result = _cli("run", "--grid", "--pretrained", path, "--mask", mask_path, "--tasks",
                  TASKS[0], "--include-path", tasks, "--limit", "1", "--output", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "module set 'connector' left out: adapter 'gemma3' has no connector neurons" in (
        result.output
    )
    grid = json.loads((out / "grid.json").read_text())
    assert grid["module_sets"] == ["none", "vision", "llm", "all"]
    assert {c["module_set"] for c in grid["cells"]} == {"none", "vision", "llm", "all"}
    settings = json.loads((out / "provenance.json").read_text())["settings"]
    assert "connector" in settings["module_sets_left_out"]


def test_analyses_refuse_connector_and_deviation_leaves_it_out_by_default(
    path, tasks, mask_path, tmp_path
):
    common = ["--pretrained", path, "--mask", mask_path, "--tasks", TASKS[0],
              "--include-path", tasks, "--limit", "1"]  # fmt: skip
    for command in (["deviation", "--seeds", "1"], ["logit-lens"]):
        refused = _cli("analyze", *command, *common, "--modules", "connector",
                       "--output", tmp_path / "x")  # fmt: skip
        assert refused.exit_code == 1
        assert "has no connector neurons" in refused.output.strip().splitlines()[-1]
    result = _cli("analyze", "deviation", *common, "--seeds", "1", "--output", tmp_path / "d")
    assert result.exit_code == 0, result.output
    assert "module set 'connector' left out" in result.output
    written = json.loads((tmp_path / "d" / "deviation.json").read_text())
    assert [r["module_set"] for r in written["rows"]] == ["none", "vision", "llm", "all"]
    assert "connector" in written["module_sets_left_out"]


def test_python_deviation_defaults_to_the_runnable_module_sets(loaded, tasks, mask_path):
    from mmneuron_bench.analysis.deviation import measure_deviation
    from mmneuron_bench.domains.tasks import load_tasks

    task_objects = load_tasks([TASKS[0]], [str(tasks)])
    mask = NeuronMask.load(mask_path)
    rows = measure_deviation(loaded, task_objects, {TASKS[0]: "common"}, mask, None, 1, 1)
    assert [r.module_set for r in rows] == ["none", "vision", "llm", "all"]
    with pytest.raises(MMNeuronError, match="no connector neurons"):
        measure_deviation(loaded, task_objects, {TASKS[0]: "common"}, mask, ["connector"], 1, 1)
