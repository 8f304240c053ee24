"""`mmneuron-bench run`: the metrics table, lmms-eval's results, provenance, determinism, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmneuron_bench.cli import build_cli
from mmneuron_bench.formats.common import sha256_file
from mmneuron_bench.testing import write_random_mask, write_tiny_task

TASKS = ("run_common_shapes", "run_medical_scans")


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run_tasks")
    for seed, name in enumerate(TASKS):
        write_tiny_task(root, name, n_docs=3, seed=seed)
    return root


def invoke(*args: str):
    return CliRunner(env={"COLUMNS": "200"}).invoke(build_cli(), ["run", *args])


def _base_args(pretrained: Path, task_dir: Path, out: Path) -> list[str]:
    return [
        "--pretrained", str(pretrained), "--tasks", ",".join(TASKS),
        "--include-path", str(task_dir), "--output", str(out),
    ]  # fmt: skip


def test_run_prints_the_tasks_metrics_and_writes_results_and_provenance(
    tiny_llava_next, task_dir, tmp_path
):
    mask_path = tmp_path / "m.mask.safetensors"
    mask = write_random_mask(tiny_llava_next, mask_path)
    out = tmp_path / "out"
    args = [*_base_args(tiny_llava_next, task_dir, out), "--mask", str(mask_path)]
    result = invoke(*args, "--modules", "vision+llm", "--limit", "2", "--seed", "3")
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    for task in TASKS:
        samples = [json.loads(line) for line in (out / f"samples_{task}.jsonl").open()]
        assert len(samples) == 2
        hits = [s["filtered_resps"][0].strip().lower() == s["doc"]["answer"] for s in samples]
        value = results["results"][task]["exact_match,none"]
        assert value == sum(hits) / 2
        [row] = [line for line in result.stdout.splitlines() if line.startswith(f"│ {task}")]
        assert "exact_match" in row and f"{value:.4f}" in row
    record = json.loads((out / "provenance.json").read_text())
    assert record["format"] == "mmneuron-run/1"
    assert record["model"]["adapter"] == "llava_next" and record["base"] == "llava_hf"
    assert len(record["model"]["fingerprint"]) == 64
    assert record["mask"]["path"] == str(mask_path)
    assert record["mask"]["sha256"] == sha256_file(mask_path)
    assert record["mask"]["modules"] == ["vision", "llm"]
    assert record["mask"]["domains"] == {TASKS[0]: ["common"], TASKS[1]: ["medical"]}
    for task, domain in zip(TASKS, ("common", "medical"), strict=True):
        selected = mask.select(domain, ["vision", "llm"])
        expected = {c: int(selected[c].sum()) if c in selected else 0 for c in mask.components}
        assert record["mask"]["deactivated"][task] == expected
        assert record["generation"][task]["max_new_tokens"] == 3
        assert record["generation"][task]["do_sample"] is False
    assert record["settings"]["seed"] == 3 and record["settings"]["limit"] == 2
    assert record["versions"]["lmms_eval"] == "0.7.3"
    assert f"wrote {out / 'provenance.json'}" in result.stdout


def test_the_same_command_twice_gives_the_same_numbers(tiny_instructblip, task_dir, tmp_path):
    mask_path = tmp_path / "m.mask.safetensors"
    write_random_mask(tiny_instructblip, mask_path)
    runs = []
    for name in ("first", "second"):
        out = tmp_path / name
        args = [*_base_args(tiny_instructblip, task_dir, out), "--mask", str(mask_path)]
        assert invoke(*args).exit_code == 0
        samples = {
            task: [
                json.loads(line)["filtered_resps"] for line in open(out / f"samples_{task}.jsonl")
            ]
            for task in TASKS
        }
        runs.append((json.loads((out / "results.json").read_text())["results"], samples))
    assert runs[0] == runs[1]


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--tasks", "no_such_task_anywhere"], 1, "task 'no_such_task_anywhere' not found"),
        (["--grid"], 2, "--grid needs --mask"),
        (["--baseline", "random"], 2, "--baseline needs --grid"),
        (["--modules", "llm"], 2, "--modules needs --mask"),
        (["--mode", "mean"], 2, "--mode needs --mask"),
        (["--mask", "MASK", "--mode", "mean"], 2, "--mode mean needs --stats"),
        (["--mask", "MASK", "--modules", "llm,all"], 2, "--modules takes one module set without"),
        (["--mask", "MASK", "--grid", "--random-seeds", "3"], 2, "--random-seeds needs --baseline"),
        (["--batch-size", "2"], 1, "'llava_hf' generates one request at a time"),
        (["--include-path", "/no/such/dir"], 1, "include path '/no/such/dir' is not a directory"),
    ],
)
def test_bad_input_is_a_one_line_error(tiny_llava_next, task_dir, tmp_path, extra, code, message):
    out = tmp_path / "out"
    if "MASK" in extra:
        write_random_mask(tiny_llava_next, tmp_path / "m.mask.safetensors")
        extra = [str(tmp_path / "m.mask.safetensors") if x == "MASK" else x for x in extra]
    result = invoke(*_base_args(tiny_llava_next, task_dir, out), *extra)
    assert result.exit_code == code, result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("Error:")]
    assert message in line
    assert not out.exists()


def test_a_mask_of_another_model_is_refused(tiny_llava_next, tiny_instructblip, task_dir, tmp_path):
    mask_path = tmp_path / "blip.mask.safetensors"
    write_random_mask(tiny_instructblip, mask_path)
    out = tmp_path / "out"
    result = invoke(*_base_args(tiny_llava_next, task_dir, out), "--mask", str(mask_path))
    assert result.exit_code == 1
    [line] = [x for x in result.output.splitlines() if x.startswith("Error:")]
    assert "the mask does not match the model" in line
    assert not out.exists()
