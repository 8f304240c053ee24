"""Forward hooks that count, per neuron, the tokens on which its activation is > 0.

Counts stay on the model's device (int64 counters, float64 sums); activations are never
copied to the host. Each batch belongs to one domain, and the caller says which positions
of the batch are real tokens, so padding never counts.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from mmneuron_bench.adapter import Component


class ActivationRecorder:
    """Accumulates `active`, `tokens` and `sum` per domain, layer and neuron."""

    def __init__(self, components: list[Component], n_domains: int, device: torch.device | str):
        self.components = components
        self.active = {}
        self.tokens = {}
        self.sum = {}
        for c in components:
            layers, width = c.info.layers, c.info.width
            self.active[c.name] = torch.zeros(
                n_domains, layers, width, dtype=torch.int64, device=device
            )
            self.tokens[c.name] = torch.zeros(n_domains, layers, dtype=torch.int64, device=device)
            self.sum[c.name] = torch.zeros(
                n_domains, layers, width, dtype=torch.float64, device=device
            )
        self._domain: int | None = None
        self._positions: dict[str, torch.Tensor | None] = {}

    def set_batch(self, domain: int, positions: dict[str, torch.Tensor | None]) -> None:
        """Declare the domain of the next forward and its real positions per position kind."""
        self._domain = domain
        self._positions = positions

    def _count(self, component: Component, layer: int, output: torch.Tensor) -> None:
        if self._domain is None:
            raise RuntimeError("ActivationRecorder.set_batch() was not called before a forward")
        keep = self._positions.get(component.spec.positions)
        values = output.reshape(-1, output.shape[-1]) if keep is None else output[keep]
        d, name = self._domain, component.name
        self.active[name][d, layer] += (values > 0).sum(0)
        self.tokens[name][d, layer] += values.shape[0]
        self.sum[name][d, layer] += values.sum(0, dtype=torch.float64)

    @contextmanager
    def hooks(self):
        """Install the counting hooks for the duration of the block."""
        handles = []
        try:
            for component in self.components:
                for layer, module in enumerate(component.modules):

                    def hook(_module, _args, output, _c=component, _layer=layer):
                        self._count(_c, _layer, output)

                    handles.append(module.register_forward_hook(hook))
            yield self
        finally:
            for handle in handles:
                handle.remove()
