"""The same checks on every built-in family (``mmneuron_bench.testing.families``), each on a
tiny offline checkpoint of its real architecture and on the configs of full-size models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mmneuron_bench.cli import build_cli
from mmneuron_bench.domains.tasks import domain_samples, load_tasks, sample_content, task_manager
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.interventions.mask import Deactivation
from mmneuron_bench.lmms.evaluate import evaluate
from mmneuron_bench.lmms.model import MMNeuronLMM
from mmneuron_bench.lmms.workarounds import ECHOING_BASES, base_kwargs, import_base
from mmneuron_bench.models.compat import video_stand_in
from mmneuron_bench.models.hooks import forward_hooks
from mmneuron_bench.models.loading import load_model, model_identity
from mmneuron_bench.recording.recorder import ActivationRecorder
from mmneuron_bench.selection.random import random_neurons
from mmneuron_bench.testing import write_tiny_task
from mmneuron_bench.testing.families import FULL_CONFIGS, families

FAMILIES = families()
TASKS = ("fam_common", "fam_medical")


def _cli(*args: str):
    return CliRunner(env={"COLUMNS": "200"}).invoke(build_cli(), [str(a) for a in args])


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tiny_checkpoint_dir, tmp_path_factory) -> dict:
    """One family: its spec, tiny checkpoint, loaded model and two tiny tasks."""
    spec = FAMILIES[request.param]
    root = tmp_path_factory.mktemp(f"family_{spec.name}")
    for seed, name in enumerate(TASKS, start=1):
        write_tiny_task(root / "tasks", name, n_docs=3, seed=seed, image_sizes=spec.image_sizes)
    path = tiny_checkpoint_dir[spec.name]
    loaded = load_model(str(path))
    assert loaded.adapter.name == spec.name
    return {"spec": spec, "path": path, "loaded": loaded, "tasks": root / "tasks", "root": root}


def _components_json(path, *flags) -> dict:
    result = _cli("adapters", "--pretrained", path, "--json", *flags)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("check", [False, True], ids=["skeleton", "loaded"])
def test_adapter_lists_the_components_and_every_hook_fires(family, check):
    listed = _components_json(family["path"], *(["--check"] if check else []))
    spec = family["spec"]
    assert {n: (c["role"], c["layers"], c["width"]) for n, c in listed.items()} == spec.components
    assert {n: c["unused_layers"] for n, c in listed.items() if c["unused_layers"]} == spec.unused


def _inputs(loaded, tasks: dict, samples) -> dict:
    contents = [sample_content(tasks, s) for s in samples]
    inputs = loaded.adapter.build_inputs(
        loaded.processor, [c[0] for c in contents], [c[1] for c in contents]
    )
    return inputs.to(loaded.model.dtype)


def _record(loaded, components, inputs) -> ActivationRecorder:
    recorder = ActivationRecorder(components, 1, "cpu")
    recorder.set_batch(0, loaded.adapter.positions(loaded.model, inputs))
    with recorder.hooks(), torch.inference_mode():
        loaded.model(**loaded.adapter.forward_kwargs(inputs))
    return recorder


def test_counts_equal_an_independent_count_at_any_batch_size(family):
    """Alone, each sample's counts are those of ``activation > 0`` over the activation rows of
    its forward; in one padded batch of images of different sizes, their sum."""
    loaded, spec = family["loaded"], family["spec"]
    components = loaded.adapter.resolve(loaded.model)
    tasks = load_tasks(list(TASKS), [str(family["tasks"])])
    samples = domain_samples(tasks, list(TASKS), None)
    total = {
        c.name: torch.zeros(c.info.layers, c.info.width, dtype=torch.int64) for c in components
    }
    tokens = {c.name: torch.zeros(c.info.layers, dtype=torch.int64) for c in components}
    for sample in samples:
        inputs = _inputs(loaded, tasks, [sample])
        seen: dict[tuple[str, int], torch.Tensor] = {}

        def keep(name: str, layer: int, store: dict = seen):
            return lambda _m, _a, out: store.__setitem__((name, layer), out.detach().clone())

        with forward_hooks(
            (m, keep(c.name, i)) for c in components for i, m in enumerate(c.modules)
        ), torch.inference_mode():  # fmt: skip
            loaded.model(**loaded.adapter.forward_kwargs(inputs))
        alone = _record(loaded, components, inputs)
        for c in components:
            for layer in range(c.info.layers):
                rows = seen[(c.name, layer)].reshape(-1, c.info.width)
                if spec.real_rows is not None:
                    rows = rows[spec.real_rows(c.name, layer, inputs, rows)]
                active = (rows > 0).sum(0)
                assert torch.equal(alone.active[c.name][0, layer], active), (c.name, layer)
                assert int(alone.tokens[c.name][0, layer]) == rows.shape[0], (c.name, layer)
                total[c.name][layer] += active
                tokens[c.name][layer] += rows.shape[0]
    batched = _record(loaded, components, _inputs(loaded, tasks, samples))
    for c in components:
        assert torch.equal(batched.active[c.name][0], total[c.name]), c.name
        assert torch.equal(batched.tokens[c.name][0], tokens[c.name]), c.name


def _responses(results: dict) -> list:
    return [
        s["filtered_resps"]
        for task in TASKS
        for s in sorted(results["samples"][task], key=lambda s: s["doc_id"])
    ]


def test_select_and_run_through_the_familys_lmms_eval_model(family, tmp_path):
    spec, path = family["spec"], family["path"]
    stats = tmp_path / "f.stats.safetensors"
    domains = [f"--domain={t.split('_')[1]}={t}" for t in TASKS]
    recorded = _cli("record", "--pretrained", path, *domains, "--include-path", family["tasks"],
                    "--batch-size", "2", "--out", stats)  # fmt: skip
    assert recorded.exit_code == 0, recorded.output
    mask_path = tmp_path / "f.mask.safetensors"
    selected = _cli("select", stats, "--top-rate", "0.2", "--out", mask_path)
    assert selected.exit_code == 0, selected.output
    assert any(m.any() for m in NeuronMask.load(mask_path).masks.values())
    if spec.lmms_eval_model is None:
        result = _cli("run", "--pretrained", path, "--tasks", ",".join(TASKS),
                      "--include-path", family["tasks"], "--output", tmp_path / "run")  # fmt: skip
        assert result.exit_code == 1
        assert "names no lmms-eval model; give base=NAME" in result.output
        return
    lm = MMNeuronLMM(pretrained=str(path), device="cpu")
    assert lm.base_name == spec.lmms_eval_model
    manager = task_manager(list(TASKS), [str(family["tasks"])], lm.base_name)
    wrapped = _responses(evaluate(lm, list(TASKS), manager))
    cls = import_base(spec.lmms_eval_model)
    with video_stand_in():
        base = cls(**base_kwargs(cls, {"pretrained": str(path), "device": "cpu"}))
    unwrapped = _responses(evaluate(base, list(TASKS), manager))
    if spec.lmms_eval_model in ECHOING_BASES:  # the base returns prompt + answer; ours the answer
        assert all(b[0].endswith(a[0]) for a, b in zip(wrapped, unwrapped, strict=True))
    else:
        assert wrapped == unwrapped
    every = NeuronMask.load(mask_path)
    every.masks = {key: torch.ones_like(m) for key, m in every.masks.items()}
    lm.set_mask(every, domain="all")
    masked = _responses(evaluate(lm, list(TASKS), manager))
    assert lm.describe()["mask"]["deactivated"][TASKS[0]] == {
        name: layers * width for name, (_, layers, width) in spec.components.items()
    }
    if spec.answers_move:
        assert masked != wrapped
    else:  # the answers stay: the logits must move
        loaded = family["loaded"]
        tasks = load_tasks([TASKS[0]], [str(family["tasks"])])
        inputs = _inputs(loaded, tasks, domain_samples(tasks, [TASKS[0]], 1))
        components = loaded.adapter.resolve(loaded.model)
        with torch.inference_mode():
            plain = loaded.model(**loaded.adapter.forward_kwargs(inputs)).logits
            with Deactivation(components, every, "all"):
                off = loaded.model(**loaded.adapter.forward_kwargs(inputs)).logits
        assert not torch.allclose(plain, off)


def test_analyses_and_multimodal_neurons_run(family, tmp_path):
    loaded, path = family["loaded"], family["path"]
    components = loaded.adapter.resolve(loaded.model)
    generator = torch.Generator().manual_seed(1)
    masks = {
        (d, c.name): random_neurons(torch.ones(c.info.layers, c.info.width, dtype=torch.bool),
                                    c.info.layers * c.info.width // 5, generator)
        for d in ("common", "medical") for c in components
    }  # fmt: skip
    infos = {c.name: c.info for c in components}
    model = model_identity(loaded, str(path))
    mask_path = tmp_path / "m.mask.safetensors"
    NeuronMask(["common", "medical"], infos, model, "random", {}, None, masks).save(mask_path)
    common = ["--pretrained", path, "--mask", mask_path, "--tasks", ",".join(TASKS),
              "--include-path", family["tasks"], "--limit", "2",
              "--output", tmp_path / "a"]  # fmt: skip
    deviation = _cli("analyze", "deviation", *common, "--seeds", "1", "--modules", "none,all")
    assert deviation.exit_code == 0, deviation.output
    rows = json.loads((tmp_path / "a" / "deviation.json").read_text())["rows"]
    assert all((r["dape"] > 0) == (r["module_set"] == "all") for r in rows)
    lens = _cli("analyze", "logit-lens", *common)
    assert lens.exit_code == 0, lens.output
    found = _cli("neurons", "find", "--pretrained", path, "--tasks", TASKS[0], "--include-path",
                 family["tasks"], "--limit", "2", "--max-new-tokens", "3", "--top-k", "3",
                 "--out", tmp_path / "n.mask.safetensors")  # fmt: skip
    assert found.exit_code == 0, found.output
    assert NeuronMask.load(tmp_path / "n.mask.safetensors").method == "contribution"


def test_full_size_configs_list_their_components(family, tmp_path):
    """A folder holding only a full-size model's config.json: its components at real size,
    from the model built on the meta device (no weights)."""
    for folder, expected in family["spec"].full_size.items():
        target = tmp_path / folder
        target.mkdir()
        shutil.copy(FULL_CONFIGS / folder / "config.json", target / "config.json")
        listed = _components_json(target)
        assert {n: (c["role"], c["layers"], c["width"]) for n, c in listed.items()} == expected


def test_every_family_has_full_size_configs():
    missing = [name for name, spec in FAMILIES.items() if not spec.full_size]
    assert not missing, f"families without a full-size config: {missing}"


def test_config_folders_exist():
    used = {folder for spec in FAMILIES.values() for folder in spec.full_size}
    assert used <= {p.name for p in Path(FULL_CONFIGS).iterdir() if p.is_dir()}
