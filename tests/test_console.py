"""The terminal: our progress and tables by default, the libraries' output only with --verbose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from mmneuron_bench.console import print_table
from mmneuron_bench.tables import Table, fitted, wrap_header
from mmneuron_bench.testing import write_tiny_task

LIBRARY_MARKERS = ("DEBUG", "Model Responding", "Postprocessing", "it/s]", "Loading weights")


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("console_tasks")
    write_tiny_task(root, "console_shapes", n_docs=3)
    return root


def _run(tiny_llava_next: Path, task_dir: Path, out: Path, *extra: str):
    env = {**os.environ, "COLUMNS": "80", "PYTHONWARNINGS": "default"}
    args = ["run", "--pretrained", str(tiny_llava_next), "--tasks", "console_shapes",
            "--include-path", str(task_dir), "--output", str(out), *extra]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "mmneuron_bench.cli", *args],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip


@pytest.mark.slow
def test_a_default_run_shows_only_our_progress_and_tables(tiny_llava_next, task_dir, tmp_path):
    done = _run(tiny_llava_next, task_dir, tmp_path / "quiet")
    assert done.returncode == 0, done.stderr
    for marker in LIBRARY_MARKERS:
        assert marker not in done.stderr and marker not in done.stdout, marker
    assert "evaluating" in done.stderr and "requests/s" in done.stderr  # our bar
    assert "exact_match" in done.stdout  # our table

    loud = _run(tiny_llava_next, task_dir, tmp_path / "loud", "--verbose")
    assert loud.returncode == 0, loud.stderr
    assert "Model Responding" in loud.stderr  # lmms-eval's tqdm bar
    assert "INFO" in loud.stderr  # lmms-eval's log


def test_wide_tables_are_split_never_cut():
    domains = ["common", "medical", "driving", "remote", "documents", "satellite_imagery"]
    table = Table(
        "selected neurons",
        ["component", *domains],
        [["qformer_query", *(str(1000 + i) for i in range(6))]],
    )
    console = Console(width=50, record=True)
    parts = fitted(table, 50)
    assert len(parts) > 1
    print_table(table, console)
    text = console.export_text()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 50
    for value in (1000, 1005):
        assert str(value) in text
    assert text.count("qformer_query") == len(parts)  # the label column repeats


def test_long_text_wraps_at_spaces_and_numbers_stay_whole():
    table = Table("timings", ["step", "seconds"], [["word " * 30, "123456.7"]])
    console = Console(width=40, record=True)
    print_table(table, console)
    text = console.export_text()
    assert "123456.7" in text and "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 40


def test_header_wraps_at_underscores():
    assert wrap_header("mmneuron_synth_common_eval (common, exact_match)", 14) == (
        "mmneuron_\nsynth_common_\neval (common,\nexact_match)"
    )
    assert wrap_header("vision tokens", 6) == "vision\ntokens"
