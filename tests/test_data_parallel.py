"""Every model-running command under `accelerate launch` (two CPU processes, gloo) writes what
one process writes: the grid, a plain run's answers and metrics, the deviation and logit-lens
analyses, and `neurons find` / `ablate`; lmms-eval's own CLI under the launcher gives the
answers one process gives."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from launch import launch_two

from mmneuron_bench.cli import build_cli
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.testing import write_random_mask, write_tiny_task

pytestmark = pytest.mark.slow  # starts processes

TASKS = ("dp_common_shapes", "dp_medical_scans")
LIMIT = 3


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """Tasks scored by a hash of the answer: equal scores mean equal answers."""
    root = tmp_path_factory.mktemp("dp_tasks")
    for seed, name in enumerate(TASKS):
        write_tiny_task(root, name, n_docs=4, seed=seed, metric="answer_hash")
    return root


@pytest.fixture(scope="module")
def mask_path(tiny_llava_next, tmp_path_factory) -> Path:
    """Domains common and medical, 30 % of every component's neurons each."""
    path = tmp_path_factory.mktemp("dp_mask") / "m.mask.safetensors"
    write_random_mask(tiny_llava_next, path, seed=4)
    return path


def _commands(checkpoint, task_dir, mask, neurons, out: Path) -> dict[str, list[str]]:
    data = [
        "--pretrained", str(checkpoint), "--tasks", ",".join(TASKS),
        "--include-path", str(task_dir), "--limit", str(LIMIT),
    ]  # fmt: skip
    masked = [*data, "--mask", str(mask)]
    return {
        "grid": ["run", "--grid", "--baseline", "random", "--modules", "none,llm", *masked,
                 "--output", str(out / "grid")],
        "run": ["run", *masked, "--modules", "llm", "--output", str(out / "run")],
        "deviation": ["analyze", "deviation", *masked, "--seeds", "2", "--output", str(out)],
        "logit-lens": ["analyze", "logit-lens", *masked, "--output", str(out)],
        "find": ["neurons", "find", *data, "--max-new-tokens", "3", "--top-k", "4",
                 "--batch-size", "3", "--out", str(out / "n.mask.safetensors")],
        "ablate": ["neurons", "ablate", "--pretrained", str(checkpoint), "--neurons",
                   str(neurons), "--draws", "2", "--out", str(out / "ablation.json")],
    }  # fmt: skip


@pytest.fixture(scope="module")
def runs(tiny_llava_next, task_dir, mask_path, tmp_path_factory) -> tuple[Path, Path]:
    """The commands run by one process (in this one), then by two launched processes."""
    one = tmp_path_factory.mktemp("one")
    two = tmp_path_factory.mktemp("two")
    neurons = one / "n.mask.safetensors"  # both ablate the neurons one process found
    runner = CliRunner()
    for name, args in _commands(tiny_llava_next, task_dir, mask_path, neurons, one).items():
        result = runner.invoke(build_cli(), args)
        assert result.exit_code == 0, (name, result.output)
    commands = list(_commands(tiny_llava_next, task_dir, mask_path, neurons, two).values())
    listed = two / "commands.json"
    listed.write_text(json.dumps(commands))
    launch_two(str(Path(__file__).with_name("launched_commands.py")), str(listed))
    return one, two


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _same_files(one: Path, two: Path, *names: str) -> None:
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name


def _launch_fields(one: dict, two: dict) -> None:
    """Provenance of two processes = one process's, plus settings.processes."""
    assert two["settings"].pop("processes") == 2
    assert two == one


def test_the_grid_is_the_one_of_one_process(runs):
    one, two = (r / "grid" for r in runs)
    _same_files(one, two, "grid.json", "grid.csv")
    values = {c["value"] for c in _json(one / "grid.json")["cells"]}
    assert len(values) > 1, "the masks move the answers"
    _launch_fields(_json(one / "provenance.json"), _json(two / "provenance.json"))


def test_a_run_gives_the_same_answers_and_metrics(runs):
    one, two = (r / "run" for r in runs)
    _same_files(one, two, *(f"samples_{task}.jsonl" for task in TASKS))
    assert len((one / f"samples_{TASKS[0]}.jsonl").read_text().splitlines()) == LIMIT
    first, second = _json(one / "results.json"), _json(two / "results.json")
    for results in (first, second):  # what differs between any two runs: time, addresses
        del results["date"]
        results["configs"] = json.loads(
            re.sub(r" at 0x[0-9a-f]+", "", json.dumps(results["configs"]))
        )
    assert second == first
    _launch_fields(_json(one / "provenance.json"), _json(two / "provenance.json"))


def test_the_analyses_are_those_of_one_process(runs):
    one, two = runs
    _same_files(one, two, "deviation.json", "deviation.csv", "logit_lens.json", "logit_lens.csv")
    rows = _json(one / "deviation.json")["rows"]
    assert {r["samples"] for r in rows} == {LIMIT} and any(r["dape"] > 0 for r in rows)


def _scores_apart(report: dict) -> list[float]:
    """Take every neuron's score out of a ``neurons find`` report (in place) and return them."""
    return [n.pop("score") for token in report["tokens"] for n in token["neurons"]]


def test_neurons_find_and_ablate_write_what_one_process_writes(runs):
    """Everything alike, but the mean scores: the processes' float64 sums are added in another
    order, so a float32 score may differ in its last bit (as the README says)."""
    one, two = runs
    _same_files(one, two, "ablation.json")
    report, other = _json(one / "n.mask.json"), _json(two / "n.mask.json")
    scores, others = _scores_apart(report), _scores_apart(other)
    assert other == report and len(scores) == len(others) > 0
    assert others == pytest.approx(scores, rel=1e-6, abs=0)
    found, again = (
        NeuronMask.load(one / "n.mask.safetensors"),
        NeuronMask.load(two / "n.mask.safetensors"),
    )
    assert again.domains == found.domains and again.params == found.params
    assert all(torch.equal(found.masks[k], again.masks[k]) for k in found.masks)
    assert _json(one / "n.mask.json")["params"]["samples"] == 2 * LIMIT


def test_lmms_eval_under_the_launcher_answers_as_one_process(
    runs, tiny_llava_next, task_dir, mask_path, tmp_path
):
    """lmms-eval's own CLI splits the documents itself: each process's mmneuron model runs on
    its own device with the mask on, and the gathered answers are one process's."""
    one, _ = runs
    args = f"pretrained={tiny_llava_next},device=cpu,mask={mask_path},modules=llm"
    launch_two(
        "-m", "lmms_eval", "--model", "mmneuron", "--model_args", args, "--tasks", ",".join(TASKS),
        "--include_path", str(task_dir), "--limit", str(LIMIT), "--log_samples",
        "--output_path", str(tmp_path), "--verbosity", "DEBUG",
    )  # fmt: skip
    for task in TASKS:
        [path] = tmp_path.rglob(f"*_samples_{task}.jsonl")
        assert _answers(path) == _answers(one / "run" / f"samples_{task}.jsonl")


def _answers(samples: Path) -> dict[int, str]:
    """Each document's filtered answer in a samples file (lmms-eval's CLI writes the string,
    `run` the list of one string)."""
    out = {}
    for line in samples.read_text().splitlines():
        sample = json.loads(line)
        answer = sample["filtered_resps"]
        out[sample["doc_id"]] = answer[0] if isinstance(answer, list) else answer
    return out
