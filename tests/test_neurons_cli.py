"""`mmneuron-bench neurons find | ablate | edit` end to end on tiny real checkpoints."""

from __future__ import annotations

import json
import re

import pytest
import torch
from click.testing import CliRunner
from planted_model import PLANTED_LAYER, PLANTED_NEURON

from mmneuron_bench.cli import build_cli
from mmneuron_bench.formats.edit import WeightEdit
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.models.loading import load_model
from mmneuron_bench.testing import write_tiny_task


def cli(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(build_cli(), [str(a) for a in args])


def assert_one_line_error(result, *fragments) -> None:
    assert result.exit_code == 1, result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("Error:")]
    for fragment in fragments:
        assert fragment in line, line


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    write_tiny_task(root, "tiny_n", n_docs=4, seed=31)
    return root


def find(checkpoint, task_dir, out, *extra):
    return cli(
        "neurons", "find", "--pretrained", checkpoint, "--tasks", "tiny_n",
        "--include-path", task_dir, "--max-new-tokens", 3, "--out", out, *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def planted_neurons(planted, task_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("found") / "red.mask.safetensors"
    result = find(planted, task_dir, out, "--top-k", 3)
    assert result.exit_code == 0, result.output
    return out


def test_find_writes_a_mask_a_json_and_a_table(tiny_llava_next, task_dir, tmp_path):
    out = tmp_path / "n.mask.safetensors"
    result = find(tiny_llava_next, task_dir, out, "--top-k", 4, "--batch-size", 3)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}\nwrote {tmp_path / 'n.mask.json'}\n" in result.stdout
    assert "Top neurons per token" in result.stdout
    mask = NeuronMask.load(out)
    scores = json.loads((tmp_path / "n.mask.json").read_text())
    assert mask.method == "contribution" and scores["method"] == "contribution"
    assert mask.params["top_k"] == 4 and mask.params["tasks"] == ["tiny_n"]
    assert mask.params["max_new_tokens"] == 3 and mask.params["samples"] == 4
    assert set(mask.components) == {"vision", "projector", "llm"}
    assert mask.domains == [t["domain"] for t in scores["tokens"]]
    generated = [t for g in scores["generations"] for t in g["tokens"]]
    assert sum(t["count"] for t in scores["tokens"]) == len(generated)
    for token in scores["tokens"]:
        assert re.fullmatch(rf"tok{token['id']}_\w*", token["domain"], re.ASCII)
        chosen = {(n["layer"], n["neuron"]) for n in token["neurons"]}
        llm = mask.masks[(token["domain"], "llm")]
        assert {tuple(x) for x in llm.nonzero().tolist()} == chosen and len(chosen) == 4
        assert not mask.masks[(token["domain"], "vision")].any()
        values = [n["score"] for n in token["neurons"]]
        assert values == sorted(values, reverse=True)
        assert all(len(n["promotes"]) == 5 for n in token["neurons"])


def test_find_keeps_only_the_chosen_tokens(planted, task_dir, tmp_path):
    out = tmp_path / "only.mask.safetensors"
    result = find(planted, task_dir, out, "--token", "blue", "--token", "red", "--top-k", 2)
    assert result.exit_code == 0, result.output
    assert NeuronMask.load(out).domains == ["tok33_red"]


def test_the_planted_neuron_is_found_ablated_and_edited(
    planted, planted_neurons, task_dir, tmp_path
):
    scores = json.loads(planted_neurons.with_suffix(".json").read_text())
    [red] = scores["tokens"]
    assert red["text"] == "red" and red["count"] == 12
    assert (red["neurons"][0]["layer"], red["neurons"][0]["neuron"]) == (
        PLANTED_LAYER,
        PLANTED_NEURON,
    )
    assert red["neurons"][0]["promotes"][0] == "red"

    ablation = tmp_path / "ablation.json"
    result = cli(
        "neurons", "ablate", "--pretrained", planted, "--neurons", planted_neurons,
        "--token", "red", "--draws", 2, "--out", ablation,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [row] = json.loads(ablation.read_text())["tokens"]
    assert row["positions"] == 12 and row["neurons"] == 3
    assert row["p_base"] - row["p_top"] > 0.8 > 0.05 > abs(row["p_base"] - row["p_random"])

    delta, report = tmp_path / "red-blue.edit.safetensors", tmp_path / "report.json"
    result = cli(
        "neurons", "edit", "--pretrained", planted, "--neurons", planted_neurons,
        "--source", "red", "--target", "blue", "--strength", 2, "--out", delta,
        "--report", report,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"wrote {delta}" in result.stdout and f"wrote {report}" in result.stdout
    effects = json.loads(report.read_text())
    at = effects["source_positions"]
    assert at["count"] == 12 and at["argmax_target_after"] == 1.0
    assert at["p_source_after"] < at["p_source_before"]
    assert at["p_target_after"] > at["p_target_before"]
    edit = WeightEdit.load(delta)
    assert edit.params["source"]["text"] == "red" and edit.params["target"]["text"] == "blue"
    assert edit.params["strength"] == 2.0 and edit.params["neurons"] == 3
    loaded = load_model(str(planted))
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    with edit.applied(loaded.model):
        pass
    assert all(torch.equal(v, before[k]) for k, v in loaded.model.state_dict().items())

    # `run --edit` applies it around every task: the answers that were "red" become "blue".
    answers = {}
    for label, extra in (("plain", []), ("edited", ["--edit", delta])):
        result = cli(
            "run", "--pretrained", planted, "--tasks", "tiny_n", "--include-path", task_dir,
            "--output", tmp_path / label, *extra,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        lines = (tmp_path / label / "samples_tiny_n.jsonl").read_text().splitlines()
        answers[label] = [json.loads(line)["filtered_resps"][0] for line in lines]
    assert all("red" in answer for answer in answers["plain"]), answers
    assert all("blue" in answer and "red" not in answer for answer in answers["edited"]), answers
    record = json.loads((tmp_path / "edited" / "provenance.json").read_text())
    assert json.dumps(record).count(str(delta)) >= 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "blue", "--target", "green"], "token 'blue' is not among"),
        (["--source", "red", "--target", "red blue"], "'red blue' is 2 tokens"),
        (["--source", "red", "--target", "red"], "the source and the target are the same"),
        (["--source", "red", "--target", "zzzqq"], "'zzzqq' is not in the vocabulary"),
    ],
)
def test_edit_refuses_bad_tokens(planted, planted_neurons, tmp_path, args, message):
    out = tmp_path / "x.edit.safetensors"
    result = cli(
        "neurons", "edit", "--pretrained", planted, "--neurons", planted_neurons, *args,
        "--out", out,
    )  # fmt: skip
    assert_one_line_error(result, message)
    assert not out.exists()


def test_a_neurons_file_of_another_model_is_refused(tiny_llava_next, planted_neurons, tmp_path):
    result = cli(
        "neurons", "ablate", "--pretrained", tiny_llava_next, "--neurons", planted_neurons,
    )  # fmt: skip
    assert_one_line_error(result, "was made on another model", "--allow-other-model")


def test_bad_paths_are_one_line_errors(planted, task_dir, tmp_path):
    result = find(planted, task_dir, tmp_path / "missing" / "x.mask.safetensors")
    assert_one_line_error(result, "cannot write (no folder")
    result = cli(
        "neurons", "edit", "--pretrained", planted, "--neurons", tmp_path / "none.safetensors",
        "--source", "red", "--target", "blue", "--out", tmp_path / "x.edit.safetensors",
    )  # fmt: skip
    assert_one_line_error(result, "none.safetensors: no such file")
    same = tmp_path / "x.mask.safetensors"
    result = find(planted, task_dir, same, "--scores", same)
    assert_one_line_error(result, "x.mask.safetensors: given for two outputs")
    assert list(tmp_path.iterdir()) == []
