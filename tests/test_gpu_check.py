"""`benchmarks/gpu_check.sh` runs its every step on the CPU at toy size (the dry run), so the
GPU check is known to work before a GPU runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # starts processes

ROOT = Path(__file__).resolve().parents[1]


def test_the_dry_run_reports_every_figure(tmp_path):
    figures = tmp_path / "figures.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--device", "cpu", "--small", "--batch-size", "2",
         "--repeats", "1", "--json", str(figures)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = json.loads(figures.read_text())
    assert found["small"] and found["device"] == "cpu" and found["batch_size"] == 2
    assert found["tokens"] > 0 and found["ratios"]["plain"] == 1.0
    assert all(found["ratios"][p] > 0 for p in ("record", "mask"))
    rates = found["samples_per_second"]
    assert rates["official"] > 0 and rates["ours"] > 0
    assert found["throughput_ratio"] == rates["ours"] / rates["official"]
    assert set(found["met"]) == {"record", "mask", "throughput"}
    assert "recording throughput" in done.stdout and "dry run at toy size" in done.stdout
    if not torch.cuda.is_available():  # the GPU tests skip here, and say why
        assert "skipped" in done.stdout and "failed" not in done.stdout
