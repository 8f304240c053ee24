"""The built-in intervention kinds, registered through the plugin hook third parties use.

``mask`` (model args ``mask``, ``modules``, ``domain``, ``mode``, ``stats``) switches a neuron
mask's neurons off; ``edit`` (``edit``) applies a weight edit. Files are loaded here, when
the kind is built from its arguments, so a bad file is refused before any model loads.
"""

from __future__ import annotations

import os
from typing import Any

from mmneuron_bench.formats.edit import WeightEdit
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.formats.stats import ActivationStats
from mmneuron_bench.interventions.base import InterventionKind
from mmneuron_bench.interventions.edit import EditIntervention
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


MASK = InterventionKind(
    "mask",
    ("mask", "modules", "domain", "mode", "stats"),
    build_mask,
    "switch a neuron mask's neurons off (each task its domains' neurons)",
)
EDIT = InterventionKind("edit", ("edit",), build_edit, "apply a weight edit around every task")


@hookimpl
def mmneuron_register_interventions(register):
    register(MASK)
    register(EDIT)
