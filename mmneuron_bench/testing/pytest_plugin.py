"""Pytest plugin: offline hubs and session-scoped tiny checkpoints of every built-in family."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Keep the model and dataset hubs offline for the whole test session."""
    # huggingface_hub and datasets read these once, at import: this module imports neither.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every tiny checkpoint, built once per session: `{family: directory}`."""
    from mmneuron_bench.testing.families import families

    root = tmp_path_factory.mktemp("tiny_checkpoints")
    return {name: family.build(root / name) for name, family in families().items()}


@pytest.fixture(scope="session")
def tiny_llava_next(tiny_checkpoint_dir: dict[str, Path]) -> Path:
    """Directory of the tiny LLaVA-NeXT checkpoint."""
    return tiny_checkpoint_dir["llava_next"]


@pytest.fixture(scope="session")
def tiny_llava(tiny_checkpoint_dir: dict[str, Path]) -> Path:
    """Directory of the tiny LLaVA-1.5 checkpoint."""
    return tiny_checkpoint_dir["llava"]


@pytest.fixture(scope="session")
def tiny_instructblip(tiny_checkpoint_dir: dict[str, Path]) -> Path:
    """Directory of the tiny InstructBLIP checkpoint."""
    return tiny_checkpoint_dir["instructblip"]
