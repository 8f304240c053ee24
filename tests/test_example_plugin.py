"""The example plugin in plugins/mmneuron-blip2, really installed: discovered, listed and used."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmneuron_bench.plugins import DISABLE_AUTOLOAD_ENV

PLUGIN_SOURCE = Path(__file__).resolve().parents[1] / "plugins" / "mmneuron-blip2"
CLI = [sys.executable, "-c", "from mmneuron_bench.cli import main; main()"]
BUILTINS = {"llava_next", "llava", "instructblip"}
BLIP2_COMPONENTS = {
    "vision": {"role": "vision", "layers": 3, "width": 48},
    "qformer_query": {"role": "connector", "layers": 2, "width": 44},
    "llm": {"role": "llm", "layers": 2, "width": 72},
}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The plugin pip-installed into a private directory, built from a copy of its source."""
    root = tmp_path_factory.mktemp("blip2_plugin")
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
    assert list(target.glob("mmneuron_blip2-*.dist-info/entry_points.txt"))
    return target


def _run(args: list[str], site: Path, **env: str) -> str:
    """Run a command with the plugin's directory on PYTHONPATH and the hub offline; its stdout."""
    environ = {k: v for k, v in os.environ.items() if k != DISABLE_AUTOLOAD_ENV}
    paths = [str(site), os.environ.get("PYTHONPATH", "")]
    environ.update(PYTHONPATH=os.pathsep.join(filter(None, paths)), HF_HUB_OFFLINE="1", **env)
    result = subprocess.run(args, env=environ, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _adapters(site: Path, **env: str) -> dict[str, dict]:
    return {a["name"]: a for a in json.loads(_run([*CLI, "adapters", "--json"], site, **env))}


def test_installed_plugin_is_listed_next_to_the_builtins(site):
    adapters = _adapters(site)
    assert BUILTINS | {"blip2"} <= set(adapters)
    assert all(adapters[name]["builtin"] for name in BUILTINS)
    blip2 = adapters["blip2"]
    assert (blip2["plugin"], blip2["builtin"]) == ("blip2", False)
    assert blip2["model_types"] == ["blip-2"]
    assert blip2["lmms_eval_model"] is None


def test_disabled_autoload_hides_the_plugin(site):
    adapters = _adapters(site, **{DISABLE_AUTOLOAD_ENV: "1"})
    assert set(adapters) == BUILTINS


def test_plugin_adapter_checks_its_tiny_checkpoint(site, tmp_path):
    checkpoint = tmp_path / "tiny_blip2"
    build = "import sys; from mmneuron_blip2.testing import build_tiny_blip2 as b; b(sys.argv[1])"
    _run([sys.executable, "-c", build, str(checkpoint)], site)
    out = _run([*CLI, "adapters", "--pretrained", str(checkpoint), "--check", "--json"], site)
    components = json.loads(out)
    assert set(components) == set(BLIP2_COMPONENTS)
    for name, expected in BLIP2_COMPONENTS.items():
        assert components[name].items() >= {**expected, "unused_layers": []}.items()
