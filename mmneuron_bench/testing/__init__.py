"""Test helpers for mmneuron-bench and adapter authors: tiny offline checkpoints and fixtures."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmneuron_bench.testing.checkpoints import (
        build_tiny_instructblip,
        build_tiny_llava,
        build_tiny_llava_next,
        tiny_image,
    )
    from mmneuron_bench.testing.masks import write_random_mask
    from mmneuron_bench.testing.tasks import write_tiny_task

__all__ = [
    "build_tiny_instructblip",
    "build_tiny_llava",
    "build_tiny_llava_next",
    "tiny_image",
    "write_random_mask",
    "write_tiny_task",
]


def __getattr__(name: str):
    # Lazy: the pytest plugin imports this package, and importing transformers before its
    # `pytest_configure` would fix huggingface_hub's offline flag before it is set.
    if name == "write_tiny_task":
        return import_module("mmneuron_bench.testing.tasks").write_tiny_task
    if name == "write_random_mask":
        return import_module("mmneuron_bench.testing.masks").write_random_mask
    if name in __all__:
        return getattr(import_module("mmneuron_bench.testing.checkpoints"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
