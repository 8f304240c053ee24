"""`mmneuron-bench record` end to end: the file, the summary, errors, and two processes."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from launch import launch_two

from mmneuron_bench.cli import build_cli
from mmneuron_bench.formats.stats import ActivationStats
from mmneuron_bench.testing import write_tiny_task


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    write_tiny_task(root, "tiny_a", n_docs=5, seed=11)
    write_tiny_task(root, "tiny_b", n_docs=4, seed=12)
    return root


def _args(checkpoint, task_dir, out, *extra):
    return [
        "record", "--pretrained", str(checkpoint), "--include-path", str(task_dir),
        "--domain", "a=tiny_a", "--domain", "b=tiny_b", "--out", str(out), *extra,
    ]  # fmt: skip


def test_record_writes_stats_and_prints_a_summary(tiny_llava, task_dir, tmp_path):
    out = tmp_path / "x.stats.safetensors"
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        build_cli(), _args(tiny_llava, task_dir, out, "--batch-size", "3")
    )
    assert result.exit_code == 0, result.output
    stats = ActivationStats.load(out)
    assert stats.domains == ["a", "b"] and stats.samples == {"a": 5, "b": 4}
    assert stats.model["adapter"] == "llava" and len(stats.model["fingerprint"]) == 64
    assert f"wrote {out}" in result.stdout
    assert list(tmp_path.iterdir()) == [out], "no checkpoint is left behind"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--domain", "broken"], "--domain 'broken' is not of the form NAME=TASK[,TASK...]"),
        (["--domain", "c=not_a_task_anywhere"], "task 'not_a_task_anywhere' not found"),
        (["--domain", " a =tiny_b"], "domain 'a' is given twice"),
        (["--domain", "c=tiny_a,tiny_b, tiny_a"], "task 'tiny_a' is given twice for domain 'c'"),
    ],
)
def test_bad_input_is_a_one_line_error(tiny_llava, task_dir, tmp_path, extra, message):
    out = tmp_path / "x.stats.safetensors"
    result = CliRunner().invoke(build_cli(), _args(tiny_llava, task_dir, out, *extra))
    assert result.exit_code == 1
    [line] = [x for x in result.output.splitlines() if x.startswith("Error:")]
    assert message in line
    assert not out.exists()


@pytest.mark.slow
def test_two_processes_count_what_one_process_counts(tiny_llava_next, task_dir, tmp_path):
    single = tmp_path / "single.stats.safetensors"
    double = tmp_path / "double.stats.safetensors"
    assert CliRunner().invoke(build_cli(), _args(tiny_llava_next, task_dir, single)).exit_code == 0
    launch_two(
        "-m", "mmneuron_bench.cli", *_args(tiny_llava_next, task_dir, double, "--batch-size", "2")
    )
    one, two = ActivationStats.load(single), ActivationStats.load(double)
    assert two.samples == one.samples
    for name in one.components:
        assert torch.equal(one.active[name], two.active[name]), name
        assert torch.equal(one.tokens[name], two.tokens[name]), name
