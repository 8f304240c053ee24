"""Hidden-state deviation on the tiny LLaVA, against hidden states and masking hooks built here
independently of the package (HF's own hidden_states[-1], hand-written zeroing hooks)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner

from mmneuron_bench.analysis.deviation import DEFINITION, measure_deviation, relative_deviation
from mmneuron_bench.cli import build_cli
from mmneuron_bench.domains.tasks import domain_samples, load_tasks, sample_content
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.interventions.targets import DomainChoice
from mmneuron_bench.models.identity import identity_of
from mmneuron_bench.models.loading import load_model
from mmneuron_bench.selection.random import select_random_like
from mmneuron_bench.testing import write_tiny_task

# Activation modules of the tiny LLaVA, spelled out here rather than taken from the adapter.
PATHS = {
    "vision": "model.vision_tower.encoder.layers.{i}.mlp.activation_fn",
    "projector": "model.multi_modal_projector.act",
    "llm": "model.language_model.layers.{i}.mlp.act_fn",
}
ROLES = {"vision": "vision", "projector": "connector", "llm": "llm"}
SETS = {
    "none": [],
    "vision": ["vision"],
    "connector": ["projector"],
    "llm": ["llm"],
    "all": ["vision", "projector", "llm"],
}
# Hand-picked neurons: (component, layer) -> indices, per domain.
CHOSEN = {
    "medical": {
        ("vision", 0): [1, 5],
        ("vision", 1): [7],
        ("projector", 0): [3],
        ("llm", 0): [2, 10],
        ("llm", 1): [40],
    },
    "driving": {("vision", 2): [0], ("llm", 1): [4, 9]},
}


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    root = tmp_path_factory.mktemp("deviation_tasks")
    write_tiny_task(root, "vqa_medical", n_docs=3, seed=1)
    write_tiny_task(root, "driving", n_docs=3, seed=2)
    meta = write_tiny_task(root, "scan_set", n_docs=2, seed=3) / "scan_set.yaml"
    meta.write_text(meta.read_text() + "metadata:\n  version: 1\n  domain: medical\n")
    write_tiny_task(root, "plain_set", n_docs=2, seed=4)
    names = ["vqa_medical", "driving", "scan_set", "plain_set"]
    return root, load_tasks(names, [str(root)])


@pytest.fixture(scope="module")
def loaded(tiny_llava):
    return load_model(str(tiny_llava))


@pytest.fixture(scope="module")
def mask(loaded, tmp_path_factory) -> NeuronMask:
    infos = {c.name: c.info for c in loaded.adapter.resolve(loaded.model)}
    masks = {}
    for domain, chosen in CHOSEN.items():
        for name, info in infos.items():
            m = torch.zeros(info.layers, info.width, dtype=torch.bool)
            for (component, layer), index in chosen.items():
                if component == name:
                    m[layer, index] = True
            masks[(domain, name)] = m
    return NeuronMask(list(CHOSEN), infos, {}, "test", {}, None, masks)


def test_relative_deviation_by_hand():
    h = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    # ||(0, -4, 0, 0)|| / ||(3, 4, 0, 0)|| = 4 / 5
    assert relative_deviation(h, torch.tensor([[3.0, 0.0], [0.0, 0.0]])) == pytest.approx(0.8)
    # The norm is over the whole matrix, not a mean of per-position ratios: sqrt(1 + 1) / 5.
    moved = torch.tensor([[3.0, 5.0], [1.0, 0.0]])
    assert relative_deviation(h, moved) == pytest.approx(math.sqrt(2) / 5)
    assert relative_deviation(h, h) == 0.0


def hand_deviation(loaded, tasks, task, mask_chosen, limit):
    """100 * mean of ||h' - h|| / ||h|| with HF's hidden_states[-1] and our own zeroing hooks."""
    model = loaded.model
    ratios = []
    for sample in domain_samples(tasks, [task], limit):
        image, question = sample_content(tasks, sample)
        inputs = loaded.adapter.build_inputs(loaded.processor, [image], [question])
        with torch.no_grad():
            h = model(**inputs, output_hidden_states=True).hidden_states[-1][0].double()
        handles = []
        for (component, layer), index in mask_chosen.items():
            module = model.get_submodule(PATHS[component].format(i=layer))
            keep = torch.ones(module_width(loaded, component))
            keep[index] = 0.0
            handles.append(module.register_forward_hook(lambda _m, _a, out, k=keep: out * k))
        try:
            with torch.no_grad():
                h_masked = model(**inputs, output_hidden_states=True).hidden_states[-1][0].double()
        finally:
            for handle in handles:
                handle.remove()
        ratios.append(float((h_masked - h).norm() / h.norm()))
    return 100 * sum(ratios) / len(ratios)


def module_width(loaded, component):
    return next(c.info.width for c in loaded.adapter.resolve(loaded.model) if c.name == component)


def chosen_of(mask: NeuronMask, domain: str, components: list[str]) -> dict:
    """(component, layer) -> neuron indices of `mask` for one domain, limited to `components`."""
    out = {}
    for component in components:
        for layer, row in enumerate(mask.masks[(domain, component)]):
            index = row.nonzero().flatten().tolist()
            if index:
                out[(component, layer)] = index
    return out


def test_deviation_matches_an_independent_computation(loaded, tasks, mask):
    _, task_objects = tasks
    rows = measure_deviation(
        loaded, task_objects, {"vqa_medical": "medical"}, mask, list(SETS), seeds=2, limit=2
    )
    by_set = {r.module_set: r for r in rows}
    assert list(by_set) == list(SETS)
    for module_set, components in SETS.items():
        row = by_set[module_set]
        assert row.samples == 2
        chosen = chosen_of(mask, "medical", components)
        assert row.neurons == sum(len(i) for i in chosen.values())
        expected = hand_deviation(loaded, task_objects, "vqa_medical", chosen, 2)
        assert row.dape == pytest.approx(expected, rel=1e-9, abs=1e-12)
        for seed in range(2):
            random_chosen = chosen_of(select_random_like(mask, seed), "medical", components)
            expected = hand_deviation(loaded, task_objects, "vqa_medical", random_chosen, 2)
            assert row.random[seed] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert by_set["none"].dape == 0.0 and by_set["none"].random == [0.0, 0.0]
    assert by_set["all"].dape > 0.0


def test_joined_domains_are_compared_with_as_many_random_neurons(loaded, tasks, mask):
    _, task_objects = tasks
    masks = dict(mask.masks)
    masks[("driving", "llm")] = mask.masks[("driving", "llm")] | mask.masks[("medical", "llm")]
    overlapping = NeuronMask(mask.domains, mask.components, {}, "test", {}, None, masks)
    domains = {"vqa_medical": "medical+driving"}
    [row] = measure_deviation(loaded, task_objects, domains, overlapping, ["all"], 2, 1)
    union = {
        c: overlapping.masks[("medical", c)] | overlapping.masks[("driving", c)]
        for c in overlapping.components
    }
    assert row.neurons == sum(int(u.sum()) for u in union.values()) == 10
    for seed in range(2):
        random = select_random_like(overlapping, seed, ["medical", "driving"])
        drawn = {
            (c, layer): row_mask.nonzero().flatten().tolist()
            for c in union
            for layer, row_mask in enumerate(random.masks[("medical", c)])
            if row_mask.any()
        }
        assert sum(len(i) for i in drawn.values()) == row.neurons
        expected = hand_deviation(loaded, task_objects, "vqa_medical", drawn, 1)
        assert row.random[seed] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_empty_mask_gives_exactly_zero(loaded, tasks, mask):
    _, task_objects = tasks
    empty = NeuronMask(
        mask.domains,
        mask.components,
        {},
        "test",
        {},
        None,
        {key: torch.zeros_like(m) for key, m in mask.masks.items()},
    )
    rows = measure_deviation(loaded, task_objects, {"driving": "driving"}, empty, ["all"], 1, 2)
    assert [(r.dape, r.random, r.neurons) for r in rows] == [(0.0, [0.0], 0)]


def test_task_domains_follow_the_automatic_rule(tasks):
    _, task_objects = tasks
    domains = ["medical", "driving", "remote_sensing"]
    explicit = DomainChoice.parse(["plain_set=driving", "vqa_medical=medical+driving"])
    assert explicit.resolve(task_objects, domains) == {
        "vqa_medical": "medical+driving",  # given
        "driving": "driving",  # the task's name
        "scan_set": "medical",  # its YAML's metadata.domain
        "plain_set": "driving",  # given
    }
    with pytest.raises(
        MMNeuronError, match="'plain_set' matches no mask domain.*--domain plain_set="
    ):
        DomainChoice().resolve(task_objects, domains)
    with pytest.raises(MMNeuronError, match="no domain 'documents'"):
        DomainChoice.parse("plain_set=documents").resolve(task_objects, domains)
    with pytest.raises(MMNeuronError, match="not among --tasks"):
        DomainChoice.parse("other=medical").resolve(task_objects, domains)


def test_several_domains_switch_off_their_union(loaded, tasks, mask):
    _, task_objects = tasks
    [row] = measure_deviation(
        loaded, task_objects, {"plain_set": "medical+driving"}, mask, ["llm"], seeds=1, limit=1
    )
    union = {("llm", 0): [2, 10], ("llm", 1): [4, 9, 40]}
    assert row.neurons == 5
    expected = hand_deviation(loaded, task_objects, "plain_set", union, 1)
    assert row.dape == pytest.approx(expected, rel=1e-9)


def run_cli(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(build_cli(), list(args))


def test_deviation_command_writes_json_and_csv(tiny_llava, tasks, mask, tmp_path):
    root, _ = tasks
    mask_path = tmp_path / "m.mask.safetensors"
    replace(mask, model=identity_of(str(tiny_llava))).save(mask_path)
    out = tmp_path / "out"
    result = run_cli(
        "analyze", "deviation", "--pretrained", str(tiny_llava), "--mask", str(mask_path),
        "--tasks", "vqa_medical,driving", "--include-path", str(root), "--modules", "none,llm",
        "--seeds", "2", "--limit", "1", "--output", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "vqa_medical (domain medical): deviation of the last hidden states (%)" in (
        " ".join(result.stdout.split())
    )
    assert DEFINITION in result.stdout
    data = json.loads((out / "deviation.json").read_text())
    assert data["format"] == "mmneuron-deviation/1" and data["definition"] == DEFINITION
    assert data["seeds"] == 2 and data["module_sets"] == ["none", "llm"]
    rows = {(r["task"], r["module_set"]): r for r in data["rows"]}
    assert set(rows) == {(t, s) for t in ("vqa_medical", "driving") for s in ("none", "llm")}
    assert rows[("driving", "none")]["dape"] == 0.0
    assert rows[("driving", "llm")]["neurons"] == 2 and rows[("driving", "llm")]["dape"] > 0
    llm = rows[("vqa_medical", "llm")]
    assert llm["random_mean"] == pytest.approx(sum(llm["random"]) / 2)
    with open(out / "deviation.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["task"], r["module_set"], float(r["dape"])) for r in table] == [
        (r["task"], r["module_set"], r["dape"]) for r in data["rows"]
    ]
    assert f"wrote {out / 'deviation.json'}" in result.stdout


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--tasks", "plain_set"], "give --domain plain_set=DOMAIN"),
        (
            ["--tasks", "driving", "--modules", "llm,decoder"],
            "modules='decoder': expected all, none or roles",
        ),
        (["--tasks", "driving", "--domain", "=driving"], "is not of the form TASK=DOMAINS"),
        (["--tasks", "driving", "--model", "instructblip"], "'instructblip' does not handle"),
    ],
)
def test_bad_input_is_a_one_line_error(tiny_llava, tasks, mask, tmp_path, extra, message):
    root, _ = tasks
    mask_path = tmp_path / "m.mask.safetensors"
    replace(mask, model=identity_of(str(tiny_llava))).save(mask_path)
    out = tmp_path / "out"
    result = run_cli(
        "analyze", "deviation", "--pretrained", str(tiny_llava), "--mask", str(mask_path),
        "--include-path", str(root), "--output", str(out), *extra,
    )  # fmt: skip
    assert result.exit_code != 0
    assert message in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("Error")]) == 1
    assert not out.exists()
