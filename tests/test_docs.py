"""The plugin docs describe every hook with its exact signature, and no hook that is gone."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from mmneuron_bench import hookspecs

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def _hook_names() -> list[str]:
    return [name for name in dir(hookspecs) if name.startswith("mmneuron_")]


def _signature(name: str) -> str:
    """``name(arg: Type, ...) -> Return`` as written in the source (annotations are strings)."""
    sig = inspect.signature(getattr(hookspecs, name))
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"{name}({params}) -> {sig.return_annotation}"


def test_every_hook_is_documented_with_its_exact_signature():
    text = DOCS.read_text()
    assert _hook_names(), "no hooks found"
    for name in _hook_names():
        signature = _signature(name)
        assert f"### `{signature}`" in text, f"docs/plugins.md lacks the heading for {signature}"


def test_docs_mention_no_unknown_hook():
    documented = set(re.findall(r"### `(mmneuron_\w+)\(", DOCS.read_text()))
    assert documented == set(_hook_names())
