"""`mmneuron-bench bench` runs the three phases on one input and reports their figures."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner

from mmneuron_bench.cli import build_cli
from mmneuron_bench.models.loading import load_model
from mmneuron_bench.selection.random import random_mask


def test_random_mask_takes_one_percent_of_each_component(tiny_llava_next):
    loaded = load_model(str(tiny_llava_next))
    components = loaded.adapter.resolve(loaded.model)
    infos = {c.name: c.info for c in components}
    mask = random_mask(infos, rate=0.01, seed=3)
    # vision 3x48 -> round(1.44) = 1, projector 1x40 -> round(0.4) = 0 -> at least 1, llm 2x80 -> 2
    assert mask.count() == {
        ("random", "vision"): 1,
        ("random", "projector"): 1,
        ("random", "llm"): 2,
    }
    again = random_mask(infos, rate=0.01, seed=3).masks
    assert all(torch.equal(mask.masks[key], again[key]) for key in mask.masks)


def test_bench_reports_every_phase(tiny_llava_next):
    args = ["bench", "--pretrained", str(tiny_llava_next), "--batch-size", "2", "--repeats", "2"]
    result = CliRunner().invoke(build_cli(), [*args, "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert set(figures["seconds"]) == {"plain", "record", "mask"}
    assert figures["ratios"]["plain"] == 1.0
    assert all(seconds > 0 for seconds in figures["seconds"].values())
    times = figures["times"]
    assert all(len(times[phase]) == 2 for phase in times)
    paired = sorted(r / p for r, p in zip(times["record"], times["plain"], strict=True))
    assert figures["ratios"]["record"] == sum(paired) / 2  # median of the two paired ratios
    assert figures["masked_neurons"] == 4
    # active + sum: 8 bytes per neuron; tokens: 8 bytes per layer (one domain).
    assert figures["recorder_bytes"] == (3 * 48 + 40 + 2 * 80) * 16 + (3 + 1 + 2) * 8
    table = CliRunner(env={"COLUMNS": "200"}).invoke(build_cli(), args)
    assert "ratio to plain" in table.stdout and "record" in table.stdout
