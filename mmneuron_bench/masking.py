"""Switch neurons off: forward hooks that set masked neurons to zero or to their mean.

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

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from mmneuron_bench.adapter import Component
from mmneuron_bench.errors import MaskMismatchError, MMNeuronError
from mmneuron_bench.mask_file import NeuronMask
from mmneuron_bench.stats_file import ActivationStats, component_mismatch

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
    ``roles``: ``"all"``, ``"none"``, one of ``vision``/``connector``/``llm`` or a list.
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
        chosen = mask.select(domains, [] if roles == "none" else roles)
        domain_names = mask.domains if domains == "all" else _as_list(domains)
        means = None if stats is None else _pooled_means(stats, infos, domain_names)
        self.layer_counts = {c.name: [0] * c.info.layers for c in components}
        self._plan: list[tuple[nn.Module, _LayerHook]] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
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
        if self._handles:
            raise RuntimeError("this Deactivation is already active")
        try:
            for module, hook in self._plan:
                self._handles.append(module.register_forward_hook(hook))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


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
