"""Which neurons a mask switches off: module sets (roles) and, per task, mask domains.

One grammar each, shared by ``run``, the grid, the analyses and the ``mmneuron`` model:

- a **module set** is ``all``, ``none`` or roles joined by ``+`` (``vision+connector``);
  commands that run several take them comma-separated (``none,vision,llm``). A set that names
  a role the model has no neurons of (Gemma 3's, PaliGemma's and Idefics3's connectors) is
  refused in one line (:func:`check_module_set`); the grid and the analyses' default sets
  leave it out with a note (:func:`runnable_module_sets`);
- a **domain choice** is ``auto`` (each task its own domain, see :func:`auto_domain`), ``all``,
  mask domains joined by ``+`` (``medical+documents``), or ``TASK=DOMAINS`` for one task
  (repeatable: ``--domain auto --domain vqav2_val=common``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.models.components import ROLES

AUTO = "auto"
# The paper's module sets (Table 1 rows) and the roles each switches off.
MODULE_SETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "vision": ("vision",),
    "connector": ("connector",),
    "llm": ("llm",),
    "all": ROLES,
}


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


def parse_module_sets(value: str) -> list[str]:
    """``"none,vision+connector"`` -> ``["none", "vision+connector"]``, each one checked."""
    sets = list(dict.fromkeys(s.strip() for s in value.split(",") if s.strip()))
    if not sets:
        raise MMNeuronError(f"--modules {value!r} names no module set")
    for module_set in sets:
        parse_modules(module_set)
    return sets


def preset_module_sets(names: Sequence[str], preset: str, adapter: Any) -> list[str]:
    """The module sets ``names`` mean under ``preset``: as given (``default``), or each paper
    row's roles for the model's family (``paper``: ``vision`` -> ``vision+connector`` for
    LLaVA-style families, see ``ModelAdapter.paper_module_sets``)."""
    if preset == "default":
        return list(names)
    rows = adapter.paper_module_sets
    return [rows.get(name, name) for name in names]


def missing_roles(adapter: Any) -> dict[str, str]:
    """``{role: why}`` for every role the adapter has no component of (Gemma 3's connector:
    a norm, a pooling and a weight matrix, no activation function), from its ``no_neurons``."""
    present = {spec.role for spec in adapter.components}
    return {
        role: adapter.no_neurons.get(role, "the adapter declares no such component")
        for role in ROLES
        if role not in present
    }


def _lacking(module_set: str | Sequence[str], adapter: Any) -> str | None:
    """Why the model cannot run ``module_set`` (a role it names has no neurons), or None."""
    if isinstance(module_set, str) and module_set in ("all", "none"):
        return None
    missing = missing_roles(adapter)
    for role in parse_modules(module_set):
        if role in missing:
            return f"adapter {adapter.name!r} has no {role} neurons ({missing[role]})"
    return None


def check_module_set(module_set: str | Sequence[str], adapter: Any) -> tuple[str, ...]:
    """The roles of ``module_set`` (:func:`parse_modules`), refusing in one line a set that
    names a role the model has no neurons of: it would silently switch nothing off there.

    ``all`` and ``none`` always pass (``all`` switches off every role the model has).
    """
    roles = parse_modules(module_set)
    reason = _lacking(module_set, adapter)
    if reason is not None:
        text = module_set if isinstance(module_set, str) else "+".join(module_set)
        present = [r for r in ROLES if r not in missing_roles(adapter)]
        raise MMNeuronError(
            f"module set {text!r}: {reason}, so nothing would be switched off there; "
            f"use {', '.join([*present, 'all'])}"
        )
    return roles


def runnable_module_sets(
    module_sets: Sequence[str], adapter: Any
) -> tuple[list[str], dict[str, str]]:
    """The module sets the model can run, and ``{set: why}`` for those left out because they
    name a role it has no neurons of (the grid's rows, the analyses' default sets)."""
    kept, left_out = [], {}
    for module_set in module_sets:
        reason = _lacking(module_set, adapter)
        if reason is None:
            kept.append(module_set)
        else:
            left_out[module_set] = reason
    return kept, left_out


def choose_module_sets(
    names: Sequence[str], given: bool, preset: str, adapter: Any
) -> tuple[list[str], dict[str, str]]:
    """The module sets to run, and ``{set: why}`` for those left out: ``names`` read under
    ``preset``; sets the user ``given`` that name a role the model has no neurons of are
    refused in one line, default sets of that kind are left out (with a note)."""
    sets = preset_module_sets(names, preset, adapter)
    if given:
        for module_set in sets:
            check_module_set(module_set, adapter)
        return sets, {}
    return runnable_module_sets(sets, adapter)


def auto_domain(task: str, mask_domains: Sequence[str], metadata: Mapping[str, Any]) -> list[str]:
    """The mask domain(s) of a task for ``auto``.

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
            f"domain auto: task {task!r} matches several mask domains ({', '.join(hits)}); "
            f"give --domain {task}=DOMAIN or the task's metadata: {{domain: NAME}}"
        )
    raise MMNeuronError(
        f"domain auto: task {task!r} matches no mask domain (mask domains: "
        f"{', '.join(mask_domains)}); give --domain {task}=DOMAIN or the task's "
        "metadata: {domain: NAME}"
    )


def _domains(value: str, mask_domains: Sequence[str]) -> list[str] | None:
    """``auto`` -> None; ``all`` or ``+``-joined names -> the names (checked)."""
    if value == AUTO:
        return None
    names = list(mask_domains) if value == "all" else [d.strip() for d in value.split("+")]
    unknown = [d for d in names if d not in mask_domains]
    if unknown or not names:
        raise MMNeuronError(
            f"domain {value!r}: the mask has no domain {unknown[0] if unknown else value!r} "
            f"(it has: {', '.join(mask_domains)}; or use auto, all)"
        )
    return names


@dataclass(frozen=True)
class DomainChoice:
    """Which mask domains each task switches off: a default and per-task choices."""

    default: str = AUTO
    per_task: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, values: Sequence[str] | str) -> DomainChoice:
        """``("auto", "vqa=common")`` -> a choice; at most one default, each task once."""
        values = [values] if isinstance(values, str) else list(values)
        default, per_task = None, {}
        for value in values:
            task, sep, domains = (part.strip() for part in str(value).partition("="))
            if sep:
                if not task or not domains:
                    raise MMNeuronError(f"--domain {value!r} is not of the form TASK=DOMAINS")
                if task in per_task:
                    raise MMNeuronError(f"--domain gives task {task!r} twice")
                per_task[task] = domains
            elif default is not None or not task:
                raise MMNeuronError(f"--domain {value!r}: give auto, all or DOMAINS once")
            else:
                default = task
        return cls(default or AUTO, tuple(per_task.items()))

    @property
    def text(self) -> str:
        """The choice as given on a command line, for provenance: ``auto,vqa=common``."""
        return ",".join([self.default, *(f"{t}={d}" for t, d in self.per_task)])

    def check(self, mask_domains: Sequence[str], tasks: Sequence[str] | None = None) -> None:
        """Refuse domains the mask lacks (and, given ``tasks``, a choice for another task)."""
        _domains(self.default, mask_domains)
        for task, domains in self.per_task:
            if tasks is not None and task not in tasks:
                raise MMNeuronError(f"--domain names task {task!r}, which is not among --tasks")
            _domains(domains, mask_domains)

    def domains(
        self, task: str, metadata: Mapping[str, Any], mask_domains: Sequence[str]
    ) -> list[str]:
        """The mask domains ``task`` switches off."""
        value = dict(self.per_task).get(task, self.default)
        return _domains(value, mask_domains) or auto_domain(task, mask_domains, metadata)

    def resolve(self, tasks: Mapping[str, Any], mask_domains: Sequence[str]) -> dict[str, str]:
        """``{task: "+"-joined domains}`` of lmms-eval task objects, all checked first."""
        self.check(mask_domains, list(tasks))
        return {
            name: "+".join(self.domains(name, task_metadata(task), mask_domains))
            for name, task in tasks.items()
        }


def task_metadata(task: Any) -> Mapping[str, Any]:
    """An lmms-eval task's YAML ``metadata`` (empty when it has none)."""
    metadata = getattr(getattr(task, "config", None), "metadata", None)
    return metadata if isinstance(metadata, dict) else {}
