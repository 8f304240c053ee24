"""The example plugin in plugins/mmneuron-example, really installed: its adapter and its
intervention kind discovered, listed and used from our CLI and from lmms-eval's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.formats.stats import ActivationStats
from mmneuron_bench.models.identity import identity_of
from mmneuron_bench.models.loading import resolve_components
from mmneuron_bench.plugins.registry import DISABLE_AUTOLOAD_ENV
from mmneuron_bench.testing import write_tiny_task
from mmneuron_bench.testing.families import families

pytestmark = pytest.mark.slow  # installs packages, runs subprocesses or the demo

PLUGIN_SOURCE = Path(__file__).resolve().parents[1] / "plugins" / "mmneuron-example"
CLI = [sys.executable, "-c", "from mmneuron_bench.cli import main; main()"]
BUILTINS = set(families())  # every built-in adapter has a family of the conformance tests
VIPLLAVA_COMPONENTS = {
    "vision": {"role": "vision", "layers": 4, "width": 52, "unused_layers": [3]},
    "projector": {"role": "connector", "layers": 1, "width": 36, "unused_layers": []},
    "llm": {"role": "llm", "layers": 2, "width": 64, "unused_layers": []},
}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The plugin pip-installed into a private directory, built from a copy of its source."""
    root = tmp_path_factory.mktemp("example_plugin")
    # Building in a copy keeps setuptools' build/ and *.egg-info out of the repository.
    source = shutil.copytree(
        PLUGIN_SOURCE,
        root / "source",
        ignore=shutil.ignore_patterns("tests", "build", "*.egg-info", "__pycache__"),
    )
    target = root / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    flags = ["--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir"]
    subprocess.run([*pip, *flags, "--target", str(target), str(source)], check=True)
    assert list(target.glob("mmneuron_example-*.dist-info/entry_points.txt"))
    return target


def _run(args: list[str], site: Path, cwd: Path | None = None, **env: str) -> str:
    """Run a command with the plugin's directory on PYTHONPATH and the hubs offline; its stdout."""
    environ = {k: v for k, v in os.environ.items() if k != DISABLE_AUTOLOAD_ENV}
    paths = [str(site), os.environ.get("PYTHONPATH", "")]
    environ.update(PYTHONPATH=os.pathsep.join(filter(None, paths)), HF_HUB_OFFLINE="1")
    environ.update(HF_DATASETS_OFFLINE="1", **env)
    result = subprocess.run(args, env=environ, capture_output=True, text=True, timeout=600, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _adapters(site: Path, **env: str) -> dict[str, dict]:
    return {a["name"]: a for a in json.loads(_run([*CLI, "adapters", "--json"], site, **env))}


def test_installed_plugin_is_listed_next_to_the_builtins(site):
    adapters = _adapters(site)
    assert {"llava_next", "llava", "instructblip", "blip2"} <= BUILTINS
    assert BUILTINS | {"vipllava"} == set(adapters)
    assert all(adapters[name]["builtin"] for name in BUILTINS)
    vipllava = adapters["vipllava"]
    assert (vipllava["plugin"], vipllava["builtin"]) == ("vipllava", False)
    assert vipllava["model_types"] == ["vipllava"]
    assert vipllava["lmms_eval_model"] is None


def test_disabled_autoload_hides_the_plugin(site):
    adapters = _adapters(site, **{DISABLE_AUTOLOAD_ENV: "1"})
    assert set(adapters) == BUILTINS


def test_plugin_adapter_checks_its_tiny_checkpoint(site, tmp_path):
    checkpoint = tmp_path / "tiny_vipllava"
    build = (
        "import sys; from mmneuron_example.testing import build_tiny_vipllava as b; b(sys.argv[1])"
    )
    _run([sys.executable, "-c", build, str(checkpoint)], site)
    out = _run([*CLI, "adapters", "--pretrained", str(checkpoint), "--check", "--json"], site)
    components = json.loads(out)
    assert set(components) == set(VIPLLAVA_COMPONENTS)
    for name, expected in VIPLLAVA_COMPONENTS.items():
        assert components[name].items() >= expected.items()
    # The plugin's adapter records through the CLI like a built-in one.
    write_tiny_task(tmp_path / "tasks", "vip_shapes", n_docs=2, seed=3)
    stats = tmp_path / "vip.stats.safetensors"
    _run([*CLI, "record", "--pretrained", str(checkpoint), "--domain", "shapes=vip_shapes",
          "--include-path", str(tmp_path / "tasks"), "--batch-size", "2", "--out", str(stats)],
         site)  # fmt: skip
    recorded = ActivationStats.load(stats)
    assert recorded.model["adapter"] == "vipllava"
    assert recorded.samples == {"shapes": 2}


@pytest.fixture(scope="module")
def scaled(site, tiny_llava_next, tmp_path_factory) -> dict:
    """A mask over the tiny LLaVA-NeXT and a tiny task, and the plain run's answers."""
    root = tmp_path_factory.mktemp("scale")
    write_tiny_task(root / "tasks", "scale_shapes", n_docs=4, seed=5)
    _, components = resolve_components(str(tiny_llava_next))
    generator = torch.Generator().manual_seed(0)
    masks = {
        ("d", c.name): torch.rand(c.info.layers, c.info.width, generator=generator) < 0.5
        for c in components
    }
    infos = {c.name: c.info for c in components}
    model = identity_of(str(tiny_llava_next))
    mask = root / "half.mask.safetensors"
    NeuronMask(["d"], infos, model, "random", {}, None, masks).save(mask)
    setting = {"root": root, "mask": mask, "model": tiny_llava_next}
    setting["plain"] = _answers(_run_scale(site, setting, "plain"))
    scale = ["--intervention", f"scale={mask}", "--intervention", "scale_factor=0"]
    setting["silenced"] = _run_scale(site, setting, "silenced", *scale)
    return setting


def _run_scale(site: Path, setting: dict, name: str, *extra: str) -> Path:
    out = setting["root"] / name
    _run(
        [*CLI, "run", "--pretrained", str(setting["model"]), "--tasks", "scale_shapes",
         "--include-path", str(setting["root"] / "tasks"), "--output", str(out), *extra],
        site,
    )  # fmt: skip
    return out


def _answers(out: Path) -> list:
    rows = [json.loads(line) for line in (out / "samples_scale_shapes.jsonl").open()]
    return [r["filtered_resps"] for r in sorted(rows, key=lambda r: r["doc_id"])]


def test_the_plugins_intervention_kind_is_listed(site):
    kinds = {k["name"]: k for k in json.loads(_run([*CLI, "interventions", "--json"], site))}
    assert {"mask", "edit", "scale"} <= set(kinds)
    assert (kinds["scale"]["builtin"], kinds["scale"]["args"]) == (False, ["scale", "scale_factor"])
    assert kinds["mask"]["builtin"] and kinds["mask"]["args"][0] == "mask"


def test_run_applies_the_plugins_intervention(site, scaled):
    neutral = _run_scale(site, scaled, "neutral", "--intervention", f"scale={scaled['mask']}",
                         "--intervention", "scale_factor=1")  # fmt: skip
    assert _answers(neutral) == scaled["plain"]
    silenced = scaled["silenced"]
    assert _answers(silenced) != scaled["plain"]
    record = json.loads((silenced / "provenance.json").read_text())
    applied = record["interventions"]["scale"]
    assert applied["factor"] == 0.0 and applied["path"] == str(scaled["mask"])
    assert applied["neurons"] == int(
        sum(m.sum() for m in NeuronMask.load(scaled["mask"]).masks.values())
    )
    # Factor 0 switches the same neurons off as the built-in mask does.
    masked = _run_scale(site, scaled, "masked", "--mask", str(scaled["mask"]), "--domain", "all")
    assert _answers(masked) == _answers(silenced)


def test_lmms_eval_cli_applies_the_plugins_intervention(site, scaled):
    out = scaled["root"] / "lmms_eval"
    args = f"pretrained={scaled['model']},device=cpu,scale={scaled['mask']},scale_factor=0"
    _run(
        [sys.executable, "-m", "lmms_eval", "--model", "mmneuron", "--model_args", args,
         "--tasks", "scale_shapes", "--include_path", str(scaled["root"] / "tasks"),
         "--output_path", str(out), "--log_samples", "--verbosity", "DEBUG"],
        site, cwd=scaled["root"],
    )  # fmt: skip
    [samples] = out.rglob("*_samples_scale_shapes.jsonl")
    rows = sorted((json.loads(line) for line in samples.open()), key=lambda r: r["doc_id"])
    # lmms-eval's sample log keeps a lone response unwrapped.
    responses = [[r] if isinstance(r, str) else r for r in (r["filtered_resps"] for r in rows)]
    assert responses == _answers(scaled["silenced"])
