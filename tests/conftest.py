"""Fixtures shared by this project's tests (the tiny checkpoints come from our pytest plugin)."""

from __future__ import annotations

from pathlib import Path

import pytest
from planted_model import build_planted


@pytest.fixture(scope="session")
def planted(tiny_llava_next: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny LLaVA-NeXT whose llm neuron 1:17 always writes ``red`` (see planted_model)."""
    return build_planted(tiny_llava_next, tmp_path_factory.mktemp("planted") / "model")
