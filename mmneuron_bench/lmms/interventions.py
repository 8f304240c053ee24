"""What the ``mmneuron`` model changes for the requests of one task: the neuron mask.

An intervention turns a task (its name and its requests' metadata) into a context manager
that is active while the task's requests run. The model holds its interventions by name and
enters each of them around every task, so another per-model change (weight edits, say)
is one more class with ``for_task`` and ``describe``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from mmneuron_bench.adapter import Component
from mmneuron_bench.components import ROLES
from mmneuron_bench.editing import WeightEdit
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.mask_file import NeuronMask, sha256_file
from mmneuron_bench.masking import MODES, Deactivation
from mmneuron_bench.stats_file import ActivationStats

AUTO = "auto"
# The paper's module sets (Table 1 rows) and the roles each deactivates.
MODULE_SETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "vision": ("vision",),
    "connector": ("connector",),
    "llm": ("llm",),
    "all": ROLES,
}


class TaskIntervention(Protocol):
    """A change to the model that is active while one task's requests run."""

    def for_task(self, task: str, metadata: Mapping[str, Any]) -> AbstractContextManager:
        """The context to enter around the requests of ``task``."""

    def describe(self) -> dict:
        """JSON-ready provenance: what was changed, per task where it differs."""


def parse_modules(value: str | Sequence[str]) -> tuple[str, ...]:
    """``all``, ``none`` or ``+``-separated roles (``vision+llm``) -> roles, in ROLES order.

    A sequence of roles is taken as it is (an empty one is ``none``).
    """
    if not isinstance(value, str):
        names = list(value)
        if not names:
            return ()
    elif value in ("all", "none"):
        return MODULE_SETS[value]
    else:
        names = [part.strip() for part in value.split("+")]
    unknown = [n for n in names if n not in ROLES]
    if unknown or not names:
        raise MMNeuronError(
            f"modules={'+'.join(names) if names else value!r}: expected all, none or roles "
            f"joined by '+' ({', '.join(ROLES)})"
        )
    return tuple(r for r in ROLES if r in names)


def parse_domain(value: str, mask_domains: Sequence[str]) -> str | tuple[str, ...]:
    """``auto``, ``all`` or ``+``-separated mask domains -> AUTO or the domains."""
    value = str(value).strip()
    if value == AUTO:
        return AUTO
    names = list(mask_domains) if value == "all" else [d.strip() for d in value.split("+")]
    unknown = [d for d in names if d not in mask_domains]
    if unknown or not names:
        raise MMNeuronError(
            f"domain={value!r}: the mask has no domain {unknown[0] if unknown else value!r} "
            f"(it has: {', '.join(mask_domains)}; or use auto, all)"
        )
    return tuple(names)


def auto_domain(task: str, mask_domains: Sequence[str], metadata: Mapping[str, Any]) -> list[str]:
    """The mask domain(s) of a task for ``domain=auto``.

    The domain named like the task; else the one domain that is a ``_``-separated part of the
    task name (task ``mmneuron_medical_pmcvqa`` -> ``medical``); else the task YAML's
    ``metadata: {domain: NAME}`` (several: a list or ``+``-joined names).
    """
    if task in mask_domains:
        return [task]
    hits = [d for d in mask_domains if f"_{d}_" in f"_{task}_"]
    declared = metadata.get("domain") if isinstance(metadata, Mapping) else None
    if len(hits) == 1:
        return hits
    if declared is not None:
        names = list(declared) if isinstance(declared, list) else str(declared).split("+")
        unknown = [d for d in names if d not in mask_domains]
        if unknown:
            raise MMNeuronError(
                f"task {task!r} declares domain {unknown[0]!r}, which the mask lacks "
                f"(it has: {', '.join(mask_domains)})"
            )
        return names
    if hits:
        raise MMNeuronError(
            f"domain=auto: task {task!r} matches several mask domains ({', '.join(hits)}); "
            "set domain= or the task's metadata: {domain: NAME}"
        )
    raise MMNeuronError(
        f"domain=auto: task {task!r} matches no mask domain (mask domains: "
        f"{', '.join(mask_domains)}); set domain= or the task's metadata: {{domain: NAME}}"
    )


class MaskIntervention:
    """Switches off the mask's neurons of some roles, for each task its domains' neurons.

    Everything that can be checked without a task is checked here: the mask (and stats)
    against the model's components, the roles, the mode and explicit domains.
    """

    def __init__(
        self,
        components: Sequence[Component],
        mask: NeuronMask,
        modules: str | Sequence[str] = "all",
        domain: str = AUTO,
        mode: str = "zero",
        stats: ActivationStats | None = None,
    ):
        if mode not in MODES:
            raise MMNeuronError(f"mode={mode!r}: expected one of {', '.join(MODES)}")
        if mode == "mean" and stats is None:
            raise MMNeuronError("mode=mean needs stats=FILE (the recorded mean activations)")
        if mode == "zero" and stats is not None:
            raise MMNeuronError("stats=FILE is used by mode=mean only")
        self.components = list(components)
        self.mask = mask
        self.roles = parse_modules(modules)
        self.domain = parse_domain(domain, mask.domains)
        self.mode = mode
        self.stats = stats
        mask.check_matches({c.name: c.info for c in self.components})
        self._deactivations: dict[tuple[str, ...], Deactivation] = {}
        self.task_domains: dict[str, list[str]] = {}
        self.task_counts: dict[str, dict[str, int]] = {}
        if self.domain != AUTO:
            self._deactivation(self.domain)

    def for_task(self, task: str, metadata: Mapping[str, Any]) -> Deactivation:
        """The deactivation of the task's domains (resolved by ``auto_domain`` for ``auto``)."""
        if self.domain == AUTO:
            domains = auto_domain(task, self.mask.domains, metadata)
        else:
            domains = list(self.domain)
        deactivation = self._deactivation(tuple(domains))
        self.task_domains[task] = domains
        self.task_counts[task] = deactivation.counts
        return deactivation

    def _deactivation(self, domains: tuple[str, ...]) -> Deactivation:
        if domains not in self._deactivations:
            self._deactivations[domains] = Deactivation(
                self.components,
                self.mask,
                domains=list(domains),
                roles=list(self.roles),
                mode=self.mode,
                stats=self.stats,
            )
        return self._deactivations[domains]

    def describe(self) -> dict:
        return {
            "method": self.mask.method,
            "mask_domains": list(self.mask.domains),
            "modules": list(self.roles),
            "domain": self.domain if self.domain == AUTO else "+".join(self.domain),
            "mode": self.mode,
            "domains": dict(self.task_domains),
            "deactivated": dict(self.task_counts),
        }


class EditIntervention:
    """A weight edit (``mmneuron-bench neurons edit``) on during every task, removed after it."""

    def __init__(self, model: Any, edit: WeightEdit, path: str):
        self.model = model
        self.edit = edit
        self.path = path

    def for_task(self, task: str, metadata: Mapping[str, Any]) -> AbstractContextManager:
        return self.edit.applied(self.model)

    def describe(self) -> dict:
        return {"path": self.path, "sha256": sha256_file(self.path), "params": self.edit.params}
