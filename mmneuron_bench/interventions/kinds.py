"""The built-in intervention kinds, registered through the plugin hook third parties use.

``mask`` (model args ``mask``, ``modules``, ``domain``, ``mode``, ``stats``) switches a neuron
mask's neurons off; ``edit`` (``edit``) applies a weight edit; ``fastmem`` (``fastmem``,
``fastmem_lr``, ``fastmem_steps``, ``fastmem_kl``, ``fastmem_target``, ``fastmem_cd``)
memorises each document's text in the last MLP before answering it. Files are loaded and
values checked here, when the kind is built from its arguments, so bad input is refused
before any model loads.
"""

from __future__ import annotations

import os
from typing import Any

from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.formats.edit import WeightEdit
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.formats.stats import ActivationStats
from mmneuron_bench.interventions.base import InterventionKind
from mmneuron_bench.interventions.edit import EditIntervention
from mmneuron_bench.interventions.fastmem import FastMemIntervention
from mmneuron_bench.interventions.mask import MaskIntervention
from mmneuron_bench.plugins.hookspecs import hookimpl


def _loaded(value: Any, cls: type) -> Any:
    return cls.load(value) if isinstance(value, (str, os.PathLike)) else value


def build_mask(args: dict[str, Any]) -> MaskIntervention:
    """``mask=FILE`` (or a NeuronMask) with ``modules``, ``domain``, ``mode``, ``stats``."""
    return MaskIntervention(
        _loaded(args["mask"], NeuronMask),
        modules=args.get("modules", "all"),
        domain=args.get("domain", "auto"),
        mode=str(args.get("mode", "zero")),
        stats=_loaded(args.get("stats"), ActivationStats),
    )


def build_edit(args: dict[str, Any]) -> EditIntervention:
    """``edit=FILE`` (or a WeightEdit)."""
    edit = args["edit"]
    return EditIntervention(
        _loaded(edit, WeightEdit), None if isinstance(edit, WeightEdit) else edit
    )


ON, OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "none")


def _number(args: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = args.get(key, default)
    if value is None:
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        name = "an integer" if kind is int else "a number"
        raise MMNeuronError(f"{key}={value!r}: expected {name}") from None


def build_fastmem(args: dict[str, Any]) -> FastMemIntervention | None:
    """``fastmem=1`` (``0``: off) with ``fastmem_lr`` (1e-5), ``fastmem_steps`` (10),
    ``fastmem_kl`` (0.1), ``fastmem_target`` (context|question) and ``fastmem_cd=ALPHA``
    (contrastive decoding; ``true``: the paper's 0.5; not given: off)."""
    switch = str(args["fastmem"]).strip().lower()
    if switch in OFF:
        return None
    if switch not in ON:
        raise MMNeuronError(f"fastmem={args['fastmem']!r}: expected 1 (on) or 0 (off)")
    cd = args.get("fastmem_cd")
    word = str(cd).strip().lower() if isinstance(cd, (str, bool)) else None
    if word in (*OFF[1:], ""):
        cd = None
    elif word in ON[1:]:
        cd = 0.5  # the paper's alpha
    return FastMemIntervention(
        lr=_number(args, "fastmem_lr", float, 1e-5),
        steps=_number(args, "fastmem_steps", int, 10),
        kl=_number(args, "fastmem_kl", float, 0.1),
        target=str(args.get("fastmem_target", "context")),
        cd=_number({"fastmem_cd": cd}, "fastmem_cd", float, None),
    )


MASK = InterventionKind(
    "mask",
    ("mask", "modules", "domain", "mode", "stats"),
    build_mask,
    "switch a neuron mask's neurons off (each task its domains' neurons)",
)
EDIT = InterventionKind("edit", ("edit",), build_edit, "apply a weight edit around every task")
FASTMEM = InterventionKind(
    "fastmem",
    ("fastmem", "fastmem_lr", "fastmem_steps", "fastmem_kl", "fastmem_target", "fastmem_cd"),
    build_fastmem,
    "memorise each document's context in the last MLP before answering it (FastMem)",
)


@hookimpl
def mmneuron_register_interventions(register):
    register(MASK)
    register(EDIT)
    register(FASTMEM)
