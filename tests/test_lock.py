"""The lock files: complete, consistent with pyproject.toml, and what this environment holds."""

from __future__ import annotations

import re
from importlib.metadata import distributions
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LEFT_OUT = {"torchvision", "timm"}  # required by lmms-eval, unusable beside the CPU torch


def pins(lock: Path) -> dict[str, str]:
    """``{canonical name: version}`` of a pip-compile lock file."""
    found = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line)
        if match:
            found[canonicalize_name(match[1])] = match[2]
    return found


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize(
    "lock, extras", [("requirements.lock", ()), ("requirements-dev.lock", ("dev",))]
)
def test_lock_pins_every_requirement_within_its_bounds(lock, extras):
    pinned = pins(REPO / lock)
    declared = project()["dependencies"] + [
        r for extra in extras for r in project()["optional-dependencies"][extra]
    ]
    for text in declared:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{lock} does not pin {name}"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{lock}: {name}=={pinned[name]} is outside {requirement.specifier}"
        )
    assert not LEFT_OUT & set(pinned)
    assert pinned["filelock"] in SpecifierSet("<4.3")


def test_dev_lock_extends_the_runtime_lock_with_the_same_versions():
    runtime, dev = pins(REPO / "requirements.lock"), pins(REPO / "requirements-dev.lock")
    assert {name: dev[name] for name in runtime} == runtime
    extra = set(dev) - set(runtime)
    assert {"pytest", "build"} <= extra


def test_environment_matches_the_lock():
    """After `bash install.sh --dev` every locked package is installed at its locked version
    (torch: any local build of it). Packages the environment held before are not ours to judge:
    CI and many users install into a Python that already has others. scripts/test_latest.sh
    deselects this."""
    pinned = pins(REPO / "requirements-dev.lock")
    installed = {
        canonicalize_name(d.metadata["Name"]): d.version
        for d in distributions()
        if d.metadata["Name"]
    }
    problems = []
    for name, want in pinned.items():
        have = installed.get(name)
        base = lambda v: v.split("+")[0]  # noqa: E731 - a CUDA or CPU build of one version
        if have is None or (have != want and not (name == "torch" and base(have) == base(want))):
            problems.append(f"{name}: locked {want}, installed {have}")
    assert not problems, "; ".join(problems)
