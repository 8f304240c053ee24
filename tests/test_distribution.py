"""Distribution of domain-specific neurons over layers, on a hand-built mask."""

from __future__ import annotations

import csv
import json
import re

import torch
from click.testing import CliRunner
from PIL import Image

from mmneuron_bench.analysis.distribution import neuron_distribution
from mmneuron_bench.cli import build_cli
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.models.components import ComponentInfo

INFOS = {
    "vision": ComponentInfo("vision", "vision", 3, 48),
    "projector": ComponentInfo("projector", "connector", 1, 40),
    "llm": ComponentInfo("llm", "llm", 2, 80),
}
# (domain, component) -> {layer: neuron indices}; neuron (llm, 1, 7) belongs to both domains.
CHOSEN = {
    ("medical", "vision"): {0: [1, 2, 3], 2: [10]},
    ("medical", "projector"): {0: [5]},
    ("medical", "llm"): {1: [7, 8]},
    ("driving", "vision"): {1: [4]},
    ("driving", "projector"): {},
    ("driving", "llm"): {0: [0, 1, 2, 3], 1: [7]},
}
# Hand counts: component -> domain -> per layer.
EXPECTED = {
    "vision": {"medical": [3, 0, 1], "driving": [0, 1, 0]},
    "projector": {"medical": [1], "driving": [0]},
    "llm": {"medical": [0, 2], "driving": [4, 1]},
}
ANY_DOMAIN = {"vision": [3, 1, 1], "projector": [1], "llm": [4, 2]}


def hand_mask() -> NeuronMask:
    masks = {}
    for (domain, component), layers in CHOSEN.items():
        info = INFOS[component]
        m = torch.zeros(info.layers, info.width, dtype=torch.bool)
        for layer, index in layers.items():
            m[layer, index] = True
        masks[(domain, component)] = m
    model = {"adapter": "llava", "name_or_path": "tiny", "fingerprint": "0" * 64}
    return NeuronMask(["medical", "driving"], dict(INFOS), model, "dape", {}, None, masks)


def test_counts_per_layer_component_and_domain():
    dist = neuron_distribution(hand_mask())
    for component, by_domain in EXPECTED.items():
        for i, domain in enumerate(dist.domains):
            assert dist.counts[component][i].tolist() == by_domain[domain]
        assert dist.any_domain[component].tolist() == ANY_DOMAIN[component]


def run_cli(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(build_cli(), list(args))


def test_distribution_command_writes_csv_json_and_pngs(tmp_path):
    mask_path = tmp_path / "hand.mask.safetensors"
    hand_mask().save(mask_path)
    out = tmp_path / "analysis"
    result = run_cli("analyze", "distribution", str(mask_path), "--output", str(out))
    assert result.exit_code == 0, result.output
    # The totals table: per domain (rows), component (columns: vision, projector, llm).
    assert re.search(r"│ medical +│ +4 │ +1 │ +2 │", result.stdout)
    assert re.search(r"│ driving +│ +1 │ +0 │ +5 │", result.stdout)
    assert re.search(r"│ any domain +│ +5 │ +1 │ +6 │", result.stdout)
    assert re.search(r"│ neurons +│ +144 │ +40 │ +160 │", result.stdout)

    with open(out / "distribution.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * (3 + 1 + 2)
    for row in rows:
        assert row["role"] == INFOS[row["component"]].role
        assert int(row["count"]) == EXPECTED[row["component"]][row["domain"]][int(row["layer"])]

    data = json.loads((out / "distribution.json").read_text())
    assert data["format"] == "mmneuron-distribution/1" and data["method"] == "dape"
    assert data["mask"]["path"] == str(mask_path) and len(data["mask"]["sha256"]) == 64
    llm = data["components"]["llm"]
    assert llm["per_layer"] == EXPECTED["llm"] and llm["total"] == {"medical": 2, "driving": 5}
    assert llm["any_domain_per_layer"] == [4, 2] and llm["any_domain_total"] == 6

    for component in INFOS:
        path = out / f"distribution_{component}.png"
        assert f"wrote {path}" in result.stdout
        with Image.open(path) as image:
            image.load()
            assert image.format == "PNG" and image.width > 100 and image.height > 100
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["distribution.csv", "distribution.json"] + [f"distribution_{c}.png" for c in INFOS]
    )


def test_a_bad_mask_is_a_one_line_error_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.mask.safetensors"
    bad.write_bytes(b"not a safetensors file")
    out = tmp_path / "analysis"
    result = run_cli("analyze", "distribution", str(bad), "--output", str(out))
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1
    assert not out.exists()
