"""A wheel built from the repo installs into a fresh virtual environment and works there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # installs packages, runs subprocesses or the demo

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Build from a copy of the working tree: a build in the checkout would leave build/ and an
    # egg-info there whose entry points shadow the installed ones while they are stale.
    source = tmp_path_factory.mktemp("source")
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout.splitlines()  # fmt: skip
    for name in listed:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    build = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)]
    subprocess.run([*build, str(source)], check=True, capture_output=True)
    [built] = out.glob("mmneuron_bench-*.whl")
    return built


def test_wheel_holds_namespaced_packages_and_entry_points(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        entry_text = archive.read(entry_points).decode()
    assert "mmneuron_bench/adapters/llava_next.py" in names
    for init in (REPO / "mmneuron_bench").rglob("__init__.py"):
        package = init.relative_to(REPO).as_posix()
        assert package in names, f"{package} is missing from the wheel: list it in pyproject.toml"
    assert "mmneuron_bench/tasks/common/mmneuron_common_vqav2.yaml" in names
    assert "mmneuron_bench/testing/pytest_plugin.py" in names
    assert "mmneuron_bench/assets/mini_llava_next/model.safetensors" in names
    assert "mmneuron_bench/tasks/synthetic/index/medical_eval.parquet" in names
    top_level = {name.split("/")[0] for name in names}
    assert not top_level & {"adapters", "tasks", "plugins", "tests"}
    assert (
        "[mmneuron_bench]" in entry_text
        and "llava_next = mmneuron_bench.adapters.llava_next" in entry_text
    )
    assert "mmneuron-bench = mmneuron_bench.cli:main" in entry_text


def test_wheel_works_in_a_fresh_venv(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # This environment's site-packages, after the venv's own, supply torch and transformers
    # without a multi-GB reinstall (its .pth files, the editable install's among them, are not
    # read: the wheel installed below is what gets imported).
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "_outer_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    run_env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    where = subprocess.run(
        [python, "-c", "import mmneuron_bench.adapters.llava as m; print(m.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=run_env,
    )
    assert Path(where.stdout.strip()).is_relative_to(env_dir)
    listed = subprocess.run(
        [env_dir / "bin" / "mmneuron-bench", "adapters", "--json"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=run_env,
    )
    adapters = {entry["name"]: entry for entry in json.loads(listed.stdout)}
    assert {"llava_next", "llava", "instructblip"} <= set(adapters)
    assert all(adapters[name]["builtin"] for name in ("llava_next", "llava", "instructblip"))
    shipped = subprocess.run(
        [python, "-c", "from mmneuron_bench.synthetic import mini_model as m; m.load_mini_model(); "
         "print(m.MINI_MODEL_DIR)"],
        check=True, capture_output=True, text=True, cwd=tmp_path, env=run_env,
    )  # fmt: skip
    assert Path(shipped.stdout.strip().splitlines()[-1]).is_relative_to(env_dir)
