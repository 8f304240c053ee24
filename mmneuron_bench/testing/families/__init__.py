"""Every built-in model family as the conformance tests check it: a tiny offline checkpoint of
the real architecture, the components it must expose, and full-size configs to list.

Each module of this package defines ``FAMILIES``, a list of :class:`Family`; :func:`families`
collects them (a new family is a new module, nothing else). ``tests/test_families.py`` runs
the same checks on every one: ``adapters --check``, exact counts against an independent
computation, batch-size and padding invariance with images of different sizes, ``select``,
``run`` through the family's lmms-eval model (an empty mask equals the unwrapped base, a
non-empty mask changes answers), the deviation and logit-lens analyses, ``neurons find``, and
the components of each full-size config built on the meta device.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Family:
    """One family: its adapter name, a tiny checkpoint builder and what it must expose.

    ``components``: ``{name: (role, layers, width)}`` of the tiny checkpoint; ``unused``:
    ``{component: [layers the model never reads]}``; ``image_sizes``: ``(width, height)`` of
    the images put in one batch (different sizes where the family takes them);
    ``lmms_eval_model``: the lmms-eval model that runs it (None: lmms-eval has none, and
    ``run`` says so in one line); ``full_size``: ``{folder under FULL_CONFIGS: components}``
    as ``adapters --pretrained`` must list them from the config alone; ``real_rows``: for
    families whose activations hold rows that are not tokens (padding tiles, rows a layer
    discards), a function ``(component name, layer, inputs, rows) -> bool mask`` of the real
    rows of a batch-1 forward;
    ``answers_move``: False for a tiny checkpoint whose greedy answers no mask changes (its
    MLPs barely touch its random LLM), where the tests check that the logits move instead.
    """

    name: str
    build: Callable[[str | Path], Path]
    components: dict[str, tuple[str, int, int]]
    lmms_eval_model: str | None
    unused: dict[str, list[int]] = field(default_factory=dict)
    image_sizes: tuple[tuple[int, int], ...] = ((32, 32),)
    full_size: dict[str, dict[str, tuple[str, int, int]]] = field(default_factory=dict)
    real_rows: Callable[[str, int, Any, Any], Any] | None = None
    answers_move: bool = True


FULL_CONFIGS = Path(__file__).resolve().parent / "full_configs"


def families() -> dict[str, Family]:
    """Every family of every module of this package, by adapter name."""
    found: dict[str, Family] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for family in getattr(module, "FAMILIES", ()):
            if family.name in found:
                raise ValueError(f"family {family.name!r} is defined twice")
            found[family.name] = family
    return found
