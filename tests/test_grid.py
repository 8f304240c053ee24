"""`mmneuron-bench run --grid`: the paper's Table 1 on a tiny model, its files, and resuming."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmneuron_bench.cli import build_cli
from mmneuron_bench.domains.tasks import task_manager
from mmneuron_bench.formats.common import sha256_file
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.formats.outputs import file_reference
from mmneuron_bench.interventions.targets import MODULE_SETS
from mmneuron_bench.lmms.evaluate import evaluate
from mmneuron_bench.lmms.grid import CSV_COLUMNS, grid_header, grid_tasks, run_grid
from mmneuron_bench.lmms.model import MMNeuronLMM
from mmneuron_bench.selection.random import select_random_like
from mmneuron_bench.testing import write_random_mask, write_tiny_task

TASKS = ("grid_common_shapes", "grid_medical_scans")
LIMIT = 2


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """Tasks scored by a hash of the answer: equal scores mean equal answers."""
    root = tmp_path_factory.mktemp("grid_tasks")
    for seed, name in enumerate(TASKS):
        write_tiny_task(root, name, n_docs=3, seed=seed, metric="answer_hash")
    return root


@pytest.fixture(scope="module")
def mask_path(tiny_llava_next, tmp_path_factory) -> Path:
    """Domains common and medical, 30 % of every component's neurons each."""
    path = tmp_path_factory.mktemp("grid_mask") / "m.mask.safetensors"
    write_random_mask(tiny_llava_next, path, seed=4)
    return path


def invoke(*args: str):
    return CliRunner(env={"COLUMNS": "200"}).invoke(build_cli(), ["run", *args])


def _args(pretrained, task_dir, mask, out, *extra) -> list[str]:
    return [
        "--pretrained", str(pretrained), "--tasks", ",".join(TASKS), "--include-path",
        str(task_dir), "--mask", str(mask), "--limit", str(LIMIT), "--output", str(out), *extra,
    ]  # fmt: skip


def _scores(args: list[str], out: Path) -> dict[str, float]:
    """Each task's score from a single `run` (not a grid) into `out`."""
    result = invoke(*args, "--output", str(out))
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())["results"]
    return {task: results[task]["answer_hash,none"] for task in TASKS}


def test_grid_writes_the_full_table_and_agrees_with_single_runs(
    tiny_llava_next, task_dir, mask_path, tmp_path
):
    out = tmp_path / "grid"
    result = invoke(
        *_args(tiny_llava_next, task_dir, mask_path, out, "--grid", "--baseline", "random")
    )
    assert result.exit_code == 0, result.output
    grid = json.loads((out / "grid.json").read_text())
    assert list(grid) == ["format", "model", "mask", "baseline", "module_sets", "tasks", "cells"]
    assert grid["format"] == "mmneuron-grid/1" and grid["baseline"] == "random"
    assert grid["model"]["adapter"] == "llava_next" and len(grid["model"]["fingerprint"]) == 64
    assert grid["mask"] == {"path": str(mask_path), "sha256": sha256_file(mask_path)}
    assert grid["module_sets"] == ["none", "vision", "connector", "llm", "all"]
    assert grid["tasks"] == {
        TASKS[0]: {"domain": "common", "metric": "answer_hash"},
        TASKS[1]: {"domain": "medical", "metric": "answer_hash"},
    }
    cells = {(c["module_set"], c["mask"], c["task"]): c for c in grid["cells"]}
    expected = [(s, "dape") for s in MODULE_SETS] + [(s, "random") for s in list(MODULE_SETS)[1:]]
    assert sorted(cells) == sorted((s, m, t) for s, m in expected for t in TASKS)
    for (_, _, task), cell in cells.items():
        assert cell["domain"] == grid["tasks"][task]["domain"] and cell["metric"] == "answer_hash"
    with open(out / "grid.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [(r["module_set"], r["mask"], r["task"], float(r["value"])) for r in rows] == [
        (c["module_set"], c["mask"], c["task"], c["value"]) for c in grid["cells"]
    ]
    record = json.loads((out / "provenance.json").read_text())
    assert record["mask"] == grid["mask"] and record["settings"]["limit"] == LIMIT
    assert record["generation"][TASKS[0]]["max_new_tokens"] == 3
    lines = result.stdout.splitlines()
    for label in ("none", "vision", "connector", "llm", "all", "llm (random)", "all (random)"):
        assert any(line.startswith(f"│ {label} ") for line in lines), label
    values = {key: cell["value"] for key, cell in cells.items()}
    assert any(values[("all", "dape", t)] != values[("none", "dape", t)] for t in TASKS)
    # Cells equal single runs: no mask for `none`, the mask (or its random twin) otherwise.
    twin = tmp_path / "random.mask.safetensors"
    select_random_like(NeuronMask.load(mask_path), seed=0).save(twin)
    common = [
        "--pretrained", str(tiny_llava_next), "--tasks", ",".join(TASKS),
        "--include-path", str(task_dir), "--limit", str(LIMIT),
    ]  # fmt: skip
    none = _scores(common, tmp_path / "none")
    llm = _scores([*common, "--mask", str(mask_path), "--modules", "llm"], tmp_path / "llm")
    vision = _scores([*common, "--mask", str(twin), "--modules", "vision"], tmp_path / "random")
    for task in TASKS:
        assert none[task] == values[("none", "dape", task)]
        assert llm[task] == values[("llm", "dape", task)]
        assert vision[task] == values[("vision", "random", task)]
    # Running the finished grid again evaluates nothing and keeps the file.
    before = (out / "grid.json").read_text()
    again = invoke(
        *_args(tiny_llava_next, task_dir, mask_path, out, "--grid", "--baseline", "random")
    )
    assert again.exit_code == 0, again.output
    assert "resuming: 18 of 18 cells" in again.stderr
    assert (out / "grid.json").read_text() == before


class Interrupt(Exception):
    pass


def test_an_interrupted_grid_resumes_without_recomputing(
    tiny_llava_next, task_dir, mask_path, tmp_path
):
    lm = MMNeuronLMM(pretrained=str(tiny_llava_next), device="cpu")
    mask = NeuronMask.load(mask_path)
    names = [TASKS[1]]  # one column keeps it short: 5 cells
    manager = task_manager(names, [str(task_dir)], lm.base_name)
    tasks = grid_tasks(manager.load_task_or_group(names), mask)
    header = grid_header(lm.identity(), file_reference(mask_path), None, tasks, list(MODULE_SETS))
    evaluated: list[str] = []

    def counting(task: str) -> dict:
        evaluated.append(task)
        return evaluate(lm, [task], manager, LIMIT)

    def grid_in(out: Path, on_cell=None) -> list[dict]:
        return run_grid(lm, mask, header, counting, out, on_cell=on_cell)

    whole = grid_in(tmp_path / "whole")
    assert len(whole) == len(evaluated) == 5

    finished = []

    def stop_after_two(cell, _value) -> None:
        finished.append(cell)
        if len(finished) == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        grid_in(tmp_path / "resumed", stop_after_two)
    saved = json.loads((tmp_path / "resumed" / "grid.json").read_text())["cells"]
    assert saved == whole[:2]
    evaluated.clear()
    resumed_cells = []
    resumed = grid_in(tmp_path / "resumed", lambda cell, _v: resumed_cells.append(cell))
    assert len(evaluated) == 3 and not set(resumed_cells) & set(finished)
    assert resumed == whole
    stored = json.loads((tmp_path / "whole" / "grid.json").read_text())
    assert json.loads((tmp_path / "resumed" / "grid.json").read_text()) == stored


def test_a_grid_folder_of_other_settings_is_refused(tiny_llava_next, task_dir, mask_path, tmp_path):
    out = tmp_path / "grid"
    (out).mkdir()
    (out / "grid.json").write_text(json.dumps({"format": "mmneuron-grid/1", "cells": []}))
    settings = {
        "tasks": list(TASKS), "include_paths": [str(task_dir)], "limit": 5, "batch_size": 1,
        "device": "cpu", "dtype": "auto", "seed": 0, "mode": "zero", "domain": "auto",
    }  # fmt: skip
    (out / "provenance.json").write_text(json.dumps({"settings": settings}))
    result = invoke(*_args(tiny_llava_next, task_dir, mask_path, out, "--grid"))
    assert result.exit_code == 1
    [line] = [x for x in result.output.splitlines() if x.startswith("Error:")]
    assert "holds a grid run with other settings (limit: 5, now 2)" in line
    # A weight edit or a stats file that the earlier cells ran with and this run lacks.
    same = {**settings, "limit": LIMIT}
    for record, key in (
        ({"settings": {**same, "edit": {"path": "e.edit.safetensors", "sha256": "0"}}}, "edit"),
        ({"settings": same, "stats": {"path": "s.stats.safetensors", "sha256": "0"}}, "stats"),
    ):
        (out / "provenance.json").write_text(json.dumps(record))
        result = invoke(*_args(tiny_llava_next, task_dir, mask_path, out, "--grid"))
        assert result.exit_code == 1
        [line] = [x for x in result.output.splitlines() if x.startswith("Error:")]
        assert f"holds a grid run with other settings ({key}: {{'path'" in line
        assert line.endswith("now None); give another --output to start anew")
    (out / "provenance.json").unlink()
    result = invoke(*_args(tiny_llava_next, task_dir, mask_path, out, "--grid"))
    assert result.exit_code == 1
    [line] = [x for x in result.output.splitlines() if x.startswith("Error:")]
    assert "holds another grid (model differs)" in line


def test_random_cells_of_joined_domains_switch_off_as_many_neurons_as_the_mask(
    tiny_llava_next, task_dir, mask_path, tmp_path
):
    lm = MMNeuronLMM(pretrained=str(tiny_llava_next), device="cpu")
    mask = NeuronMask.load(mask_path)
    names = [TASKS[1]]
    manager = task_manager(names, [str(task_dir)], lm.base_name)
    tasks = grid_tasks(manager.load_task_or_group(names), mask, "common+medical")
    header = grid_header(
        lm.identity(), file_reference(mask_path), "random", tasks, ["vision", "all"]
    )
    switched_off = {}

    def counting(task: str) -> dict:
        results = evaluate(lm, [task], manager, 1)
        intervention = lm.interventions.get("mask")
        switched_off[tuple(intervention.roles), intervention.mask.method] = sum(
            intervention.task_counts[task].values()
        )
        return results

    run_grid(lm, mask, header, counting, tmp_path / "grid")
    union = {c: mask.masks[("common", c)] | mask.masks[("medical", c)] for c in mask.components}
    overlap = sum(
        int((mask.masks[("common", c)] & mask.masks[("medical", c)]).sum()) for c in union
    )
    assert overlap > 0, "the domains must share neurons for this test to mean anything"
    vision_union = int(union["vision"].sum())
    all_union = sum(int(u.sum()) for u in union.values())
    assert switched_off == {
        (("vision",), "dape"): vision_union,
        (("vision",), "random"): vision_union,
        (("vision", "connector", "llm"), "dape"): all_union,
        (("vision", "connector", "llm"), "random"): all_union,
    }
