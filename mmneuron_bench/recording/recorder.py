"""Forward hooks that count, per neuron, the tokens on which its activation is > 0.

Counts stay on the device (int64 counters, float64 sums); activations are never copied to the
host. Each layer's counters live on the device its activations come out on, so a model
dispatched over several devices counts every shard where it runs; :attr:`active`,
:attr:`tokens` and :attr:`sum` gather them on the CPU. Each batch belongs to one domain, and
the caller says which positions of the batch are real tokens, so padding never counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from mmneuron_bench.models.adapter import Component
from mmneuron_bench.models.hooks import forward_hooks


class _LayerCounters:
    """One layer's ``active`` [D, N] (int64), ``tokens`` [D] (int64) and ``sum`` [D, N]
    (float64), kept on one device and moved to another the first time its activations
    come out there."""

    def __init__(self, n_domains: int, width: int, device: torch.device | str):
        self.active = torch.zeros(n_domains, width, dtype=torch.int64, device=device)
        self.tokens = torch.zeros(n_domains, dtype=torch.int64, device=device)
        self.sum = torch.zeros(n_domains, width, dtype=torch.float64, device=device)

    def on(self, device: torch.device) -> _LayerCounters:
        if self.active.device != device:
            self.active, self.tokens, self.sum = (
                t.to(device) for t in (self.active, self.tokens, self.sum)
            )
        return self


class ActivationRecorder:
    """Accumulates `active`, `tokens` and `sum` per domain, layer and neuron.

    ``device`` is where the counters start; each layer's move to its activations' device on
    the first forward (once, before anything is counted there).
    """

    def __init__(self, components: list[Component], n_domains: int, device: torch.device | str):
        self.components = components
        self._layers = {
            c.name: [_LayerCounters(n_domains, c.info.width, device) for _ in c.modules]
            for c in components
        }
        self._domain: int | None = None
        self._positions: dict[str, torch.Tensor | None] = {}
        self._weights: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def active(self) -> dict[str, torch.Tensor]:
        """Per component, int64 ``[domains, layers, width]`` on the CPU."""
        return self._gathered("active")

    @property
    def tokens(self) -> dict[str, torch.Tensor]:
        """Per component, int64 ``[domains, layers]`` on the CPU."""
        return self._gathered("tokens")

    @property
    def sum(self) -> dict[str, torch.Tensor]:
        """Per component, float64 ``[domains, layers, width]`` on the CPU."""
        return self._gathered("sum")

    def counter_bytes(self) -> int:
        """Memory the counters take, on whatever devices they are."""
        return sum(
            t.numel() * t.element_size()
            for layers in self._layers.values()
            for c in layers
            for t in (c.active, c.tokens, c.sum)
        )

    def _gathered(self, what: str) -> dict[str, torch.Tensor]:
        return {
            name: torch.stack([getattr(c, what).cpu() for c in layers], dim=1)
            for name, layers in self._layers.items()
        }

    def set_batch(self, domain: int, positions: dict[str, torch.Tensor | None]) -> None:
        """Declare the domain of the next forward and its real positions per position kind."""
        self._domain = domain
        self._positions = positions
        self._weights = {}

    def _row_weights(
        self, kind: str, rows: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's [1, rows] float 0/1 weights of real positions and their count, built
        once per batch and position kind, not once per layer."""
        key = (kind, rows, device)
        if key not in self._weights:
            keep = self._positions.get(kind)
            weights = (
                torch.ones(1, rows, device=device)
                if keep is None
                else keep.reshape(1, -1).to(device, torch.float32)
            )
            self._weights[key] = weights, weights.sum().long()  # exact below 2**24 tokens
        return self._weights[key]

    def _count(self, component: Component, layer: int, output: torch.Tensor) -> None:
        if self._domain is None:
            raise RuntimeError("ActivationRecorder.set_batch() was not called before a forward")
        values = output.reshape(-1, output.shape[-1]).float()
        kind = component.spec.positions
        if f"{kind}@{layer}" in self._positions:  # this layer's own positions
            kind = f"{kind}@{layer}"
        weights, tokens = self._row_weights(kind, values.shape[0], values.device)
        d = self._domain
        counters = self._layers[component.name][layer].on(values.device)
        counters.active[d] += _row_weighted_sum(weights, (values > 0).float()).long()
        counters.tokens[d] += tokens
        counters.sum[d] += _row_weighted_sum(weights, values, exact=False).double()

    @contextmanager
    def hooks(self) -> Iterator[ActivationRecorder]:
        """Install the counting hooks for the duration of the block."""

        def counter(component: Component, layer: int):
            return lambda _module, _args, output: self._count(component, layer, output)

        with forward_hooks(
            (module, counter(component, layer))
            for component in self.components
            for layer, module in enumerate(component.modules)
        ):
            yield self


# float32 holds every integer up to 2**24 exactly, so 0/1 products summed in chunks of at most
# that many rows give exact counts.
_EXACT_ROWS = 2**24


def _row_weighted_sum(
    weights: torch.Tensor, values: torch.Tensor, exact: bool = True
) -> torch.Tensor:
    """``weights @ values`` ([1, M] x [M, N] -> [N]) as a matrix product.

    A matrix product reads the activations once and runs on the BLAS kernels, several times
    faster than a masked gather followed by two reductions. Where float32 matrix products may
    round their inputs (TF32 on CUDA, reduced precision settings), activation sums fall back
    to a plain float64 reduction; 0/1 inputs are exact either way.
    """
    if not exact and _matmul_may_round(values):
        return (values * weights.reshape(-1, 1)).sum(0, dtype=torch.float64)
    total = torch.zeros(values.shape[1], dtype=torch.float64, device=values.device)
    for start in range(0, values.shape[0], _EXACT_ROWS):
        rows = slice(start, start + _EXACT_ROWS)
        total += torch.mm(weights[:, rows], values[rows]).squeeze(0).double()
    return total


def _matmul_may_round(values: torch.Tensor) -> bool:
    if torch.get_float32_matmul_precision() != "highest":
        return True
    return values.is_cuda and torch.backends.cuda.matmul.allow_tf32
