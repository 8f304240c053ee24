"""The installed libraries are checked against the project's requirements before anything runs."""

from __future__ import annotations

import importlib.metadata

from click.testing import CliRunner

from mmneuron_bench import versions
from mmneuron_bench.cli import build_cli


def _fake_versions(monkeypatch, **fake: str) -> None:
    real = importlib.metadata.version

    def version(name: str) -> str:
        return fake.get(name.replace("-", "_").lower(), real(name))

    monkeypatch.setattr(versions, "version", version)


def test_the_installed_stack_satisfies_the_requirements():
    assert versions.requirement_problems() == []


def test_a_too_old_transformers_is_one_line_naming_the_version(monkeypatch, tiny_llava):
    _fake_versions(monkeypatch, transformers="5.5.0")
    [problem] = versions.requirement_problems()
    assert problem.startswith("transformers 5.5.0 is installed, but mmneuron-bench needs")
    assert "transformers>=5.6" in problem
    result = CliRunner().invoke(build_cli(), ["adapters", "--pretrained", str(tiny_llava)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: transformers 5.5.0 is installed")
    assert len(result.output.strip().splitlines()) == 1


def test_a_filelock_without_the_module_lmms_eval_imports_is_refused(monkeypatch):
    _fake_versions(monkeypatch, filelock="4.3.1")
    [problem] = versions.requirement_problems()
    assert "filelock 4.3.1 is installed" in problem and "filelock<4.3" in problem


def test_extras_are_not_required(monkeypatch):
    # pytest is a dev extra: an environment without it still satisfies the requirements.
    real = importlib.metadata.version

    def version(name: str) -> str:
        if name in ("pytest", "ruff", "build"):
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(versions, "version", version)
    problems = versions.requirement_problems()
    assert not any(p.startswith(("pytest", "build")) for p in problems)
