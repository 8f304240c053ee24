"""Switch neurons off: forward hooks that set masked neurons to zero or to their mean, and the
``mask`` intervention that does it per task (each task its own domains' neurons).

::

    components = loaded.adapter.resolve(loaded.model)
    with Deactivation(components, mask, domains=["medical"], roles=["llm"]):
        loaded.model.generate(**inputs)

Everything is checked when a :class:`Deactivation` is built, before any hook exists: the mask
(and, for ``mode="mean"``, the stats) must match the model's components as a whole, or
:class:`MaskMismatchError` is raised. Hooks replace the activation output on every position
of every forward (prompt and generated tokens). Only layers with a masked neuron get a hook, so
an empty selection installs nothing and leaves the outputs bit-identical. Leaving the block
removes every hook, also on an exception; the object can be entered again afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from mmneuron_bench.errors import MaskMismatchError, MMNeuronError
from mmneuron_bench.formats.common import component_mismatch
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.formats.stats import ActivationStats
from mmneuron_bench.interventions.base import ORDER_ACTIVATIONS, Intervention, Target
from mmneuron_bench.interventions.targets import (
    AUTO,
    DomainChoice,
    check_module_set,
    parse_modules,
)
from mmneuron_bench.models.adapter import Component
from mmneuron_bench.models.components import ROLES
from mmneuron_bench.models.hooks import forward_hooks

MODES = ("zero", "mean")


class _LayerHook:
    """Forward hook of one layer: writes zeros or the mean values into the masked neurons.

    The index (and values) are kept on the CPU and copied once per (device, dtype) of the
    activations they meet, the first time they meet them; activation modules have no
    parameters that would tell the device in advance.
    """

    def __init__(self, index: torch.Tensor, values: torch.Tensor | None):
        self.index = index
        self.values = values
        self._cache: dict[tuple[torch.device, torch.dtype], tuple] = {}

    def __call__(self, _module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        key = (output.device, output.dtype)
        if key not in self._cache:
            values = None if self.values is None else self.values.to(output.device, output.dtype)
            self._cache[key] = (self.index.to(output.device), values)
        index, values = self._cache[key]
        # index_fill writes +0.0 exactly; multiplying by 0 would give -0.0 and NaN.
        if _owns(output, args):
            if values is None:
                return output.index_fill_(-1, index, 0.0)
            return output.index_copy_(-1, index, values.expand(*output.shape[:-1], -1))
        if values is None:
            return output.index_fill(-1, index, 0.0)
        return output.index_copy(-1, index, values.expand(*output.shape[:-1], -1))


def _owns(output: torch.Tensor, args: tuple) -> bool:
    """Whether the hook may write into ``output`` in place (saving a copy of the whole
    activation): autograd does not track it, it is no view, and it is not the module's input
    (an identity or in-place activation returns its input, which others may read)."""
    if output.requires_grad or output._base is not None:
        return False
    return not any(output is a or (isinstance(a, torch.Tensor) and a._base is output) for a in args)


class Deactivation:
    """Context manager that deactivates the neurons a mask selects.

    ``components`` are the model's resolved components (``adapter.resolve(model)``).
    ``domains``: ``"all"``, one domain or a list (the union of their masks is switched off).
    ``roles``: ``"all"``, ``"none"``, one of ``vision``/``connector``/``llm`` or a list; every
    role (``"all"`` or all three) means every role the model has, and otherwise a role none of
    ``components`` has is refused (nothing would be switched off there).
    ``mode="zero"`` sets the neurons to 0.0; ``mode="mean"`` sets each to its mean activation
    pooled over the chosen domains, ``sum(stats.sum[domains]) / sum(stats.tokens[domains])``
    (every token of those domains weighs the same), cast to the activation dtype. ``stats``
    is required for ``"mean"`` only and must match the model's components.
    """

    def __init__(
        self,
        components: Sequence[Component],
        mask: NeuronMask,
        domains: Sequence[str] | str = "all",
        roles: Iterable[str] | str = "all",
        mode: str = "zero",
        stats: ActivationStats | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if (stats is not None) != (mode == "mean"):
            raise ValueError("stats are required for mode 'mean' and only used there")
        infos = {c.name: c.info for c in components}
        mask.check_matches(infos)
        if roles not in ("all", "none") and set(_as_list(roles)) != set(ROLES):  # all: all it has
            present = {c.role for c in components}
            for role in _as_list(roles):
                if role in ROLES and role not in present:
                    raise MaskMismatchError(
                        f"role {role!r}: the model has no neurons there (it has "
                        f"{', '.join(sorted(present))}), so nothing would be switched off"
                    )
        chosen = mask.select(domains, [] if roles == "none" else roles)
        domain_names = mask.domains if domains == "all" else _as_list(domains)
        means = None if stats is None else _pooled_means(stats, infos, domain_names)
        self.layer_counts = {c.name: [0] * c.info.layers for c in components}
        self._plan: list[tuple[nn.Module, _LayerHook]] = []
        self._active: AbstractContextManager | None = None
        for component in components:
            selected = chosen.get(component.name)
            if selected is None:
                continue
            for layer, module in enumerate(component.modules):
                index = selected[layer].nonzero().flatten()
                if index.numel() == 0:
                    continue
                self.layer_counts[component.name][layer] = index.numel()
                values = None
                if means is not None:
                    values = _layer_means(means, component.name, layer, index, domain_names)
                self._plan.append((module, _LayerHook(index, values)))

    @property
    def counts(self) -> dict[str, int]:
        """Number of deactivated neurons per component (every component, 0 where none)."""
        return {name: sum(layers) for name, layers in self.layer_counts.items()}

    def __enter__(self) -> Deactivation:
        if self._active is not None:
            raise RuntimeError("this Deactivation is already active")
        self._active = forward_hooks(self._plan)
        self._active.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        active, self._active = self._active, None
        if active is not None:
            active.__exit__(*exc_info)


def check_mask_model(
    model: nn.Module,
    components: Sequence[Component],
    mask: NeuronMask,
    stats: ActivationStats | None = None,
    allow_other: bool = False,
    names: tuple[str, str] = ("the mask", "the stats"),
) -> dict[str, dict]:
    """Refuse a mask (and mean-mode stats) whose components do not match ``model``'s, or
    which were made on another model unless ``allow_other`` (see
    :func:`~mmneuron_bench.models.identity.check_files`); ``model`` may be a skeleton."""
    from mmneuron_bench.models.identity import check_files

    infos = {c.name: c.info for c in components}
    mask.check_matches(infos)
    files = {names[0]: mask.model}
    if stats is not None:
        problem = component_mismatch(stats.components, infos, "stats", "model")
        if problem:
            raise MaskMismatchError(f"the stats do not match the model: {problem}")
        files[names[1]] = stats.model
    return check_files(files, model, allow_other)


def _as_list(names: Sequence[str] | str) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


def _pooled_means(
    stats: ActivationStats, infos: dict, domains: list[str]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per component, the summed `sum` [L, N] and `tokens` [L] of the chosen domains."""
    problem = component_mismatch(stats.components, infos, "stats", "model")
    if problem:
        raise MaskMismatchError(f"the stats do not match the model: {problem}")
    missing = [d for d in domains if d not in stats.domains]
    if missing:
        raise MaskMismatchError(
            f"the stats have no domain {missing[0]!r} (they have: {', '.join(stats.domains)})"
        )
    rows = [stats.domains.index(d) for d in domains]
    return {c: (stats.sum[c][rows].sum(0), stats.tokens[c][rows].sum(0)) for c in infos}


def _layer_means(
    means: dict, component: str, layer: int, index: torch.Tensor, domains: list[str]
) -> torch.Tensor:
    """Pooled float64 means of the neurons `index` of one layer."""
    total, tokens = means[component]
    if tokens[layer] == 0:
        raise MMNeuronError(
            f"the stats saw no tokens in layer {layer} of {component!r} for domain(s) "
            f"{', '.join(domains)}, so mean deactivation is undefined there"
        )
    return total[layer, index] / tokens[layer]


class MaskIntervention(Intervention):
    """Switches off a mask's neurons of some roles, for each task its domains' neurons.

    Everything that can be checked without a task is checked when it is built and attached:
    the mask (and, for ``mean``, the stats) against the model's components, the roles (a
    module set naming a role the model has no neurons of is refused), the mode and explicit
    domains.
    """

    kind = "mask"
    order = ORDER_ACTIVATIONS

    def __init__(
        self,
        mask: NeuronMask,
        modules: str | Sequence[str] = "all",
        domain: DomainChoice | str = AUTO,
        mode: str = "zero",
        stats: ActivationStats | None = None,
    ):
        if mode not in MODES:
            raise MMNeuronError(f"mode={mode!r}: expected one of {', '.join(MODES)}")
        if mode == "mean" and stats is None:
            raise MMNeuronError("mode=mean needs stats=FILE (the recorded mean activations)")
        if mode == "zero" and stats is not None:
            raise MMNeuronError("stats=FILE is used by mode=mean only")
        self.mask = mask
        self.modules = modules
        self.roles = parse_modules(modules)
        self.choice = domain if isinstance(domain, DomainChoice) else DomainChoice.parse(domain)
        self.choice.check(mask.domains)
        self.mode = mode
        self.stats = stats
        self.components: list[Component] = []
        self._deactivations: dict[tuple[str, ...], Deactivation] = {}
        self.task_domains: dict[str, list[str]] = {}
        self.task_counts: dict[str, dict[str, int]] = {}

    def check_model(
        self, model: nn.Module, components: Sequence[Component], allow_other: bool = False
    ) -> dict[str, dict]:
        return check_mask_model(model, components, self.mask, self.stats, allow_other)

    def attach(self, target: Target) -> None:
        self.components = list(target.components)
        check_module_set(self.modules, target.loaded.adapter)
        self.mask.check_matches({c.name: c.info for c in self.components})
        if not self.choice.per_task and self.choice.default != AUTO:
            self._deactivation(tuple(self.choice.domains("", {}, self.mask.domains)))

    def for_task(self, task: str, metadata: Mapping[str, Any]) -> Deactivation:
        """The deactivation of the task's domains (``auto``: :func:`auto_domain`)."""
        domains = self.choice.domains(task, metadata, self.mask.domains)
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
            "domain": self.choice.text,
            "mode": self.mode,
            "domains": dict(self.task_domains),
            "deactivated": dict(self.task_counts),
        }
