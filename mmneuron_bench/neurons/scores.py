"""Multimodal neurons (Pan et al.): gradient-free contribution scores of language-model neurons.

Each image is captioned or answered with greedy decoding. At every generated position the
score of neuron ``k`` of layer ``l`` of the ``llm`` component for the generated token ``t`` is

    s[l, k] = a[l, k] * (W_down[l][:, k] . W_U[t, :])

where ``a`` is the neuron's activation at the position that predicts ``t``, read where every
other component reads it (the activation module's output: for gated MLPs ``act_fn(gate_proj(x))``,
without the ``up_proj`` factor), ``W_down[l]`` is the MLP's output projection ``[hidden, width]``
and ``W_U`` the LM head's weight ``[vocab, hidden]``. The final norm is ignored, as in the paper.

The score is linear in ``a``, so the mean score of a token over its positions is the mean
activation times the projection: only the activation sums per generated token are kept, and
``W_down^T W_U`` is computed for the needed tokens in chunks, never for the whole vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from mmneuron_bench.models.components import ComponentInfo

_TOKEN_CHUNK = 64  # tokens whose projections are computed together
_NEURON_CHUNK = 256  # neurons whose promoted tokens are computed together


@dataclass(frozen=True)
class TokenNeurons:
    """The top neurons of one token: ``neurons`` int64 ``[k, 2]`` (layer, neuron), ``scores``."""

    token: int
    count: int  # positions that generated the token
    samples: int  # samples that generated it at least once
    neurons: torch.Tensor
    scores: torch.Tensor


def contribution_scores(
    mean_activation: torch.Tensor,
    tokens: torch.Tensor,
    down: Sequence[torch.Tensor],
    unembed: torch.Tensor,
) -> torch.Tensor:
    """``s[i, l, k] = a[i, l, k] * (W_down[l][:, k] . W_U[tokens[i]])``, float32 ``[T, L, N]``.

    ``mean_activation`` is ``[T, L, N]``, ``down`` the per-layer ``[hidden, width]`` weights.
    Only the rows of ``W_U`` of ``tokens`` are read.
    """
    rows = unembed[tokens.to(unembed.device)].float()  # [T, hidden]
    projection = torch.stack([rows @ w.float() for w in down], dim=1)  # [T, L, N]
    return mean_activation.to(projection.device, torch.float32) * projection


class TokenActivations:
    """Per generated token: the sum of the llm activations at the positions predicting it."""

    def __init__(self, info: ComponentInfo, keep: set[int] | None = None):
        self.info = info
        self.keep = keep
        self.sums: dict[int, torch.Tensor] = {}  # float64 [L, N] on the CPU
        self.counts: dict[int, int] = {}
        self.samples: dict[int, int] = {}

    def add(self, tokens: Sequence[int], activations: torch.Tensor) -> None:
        """Add one sample's positions: ``activations[i]`` ``[L, N]`` predicted ``tokens[i]``."""
        ids = torch.tensor(tokens, dtype=torch.long)
        for token in dict.fromkeys(tokens):
            if self.keep is not None and token not in self.keep:
                continue
            rows = (ids == token).nonzero().flatten().to(activations.device)
            total = activations.index_select(0, rows).double().sum(0).cpu()
            if token in self.sums:
                self.sums[token] += total
            else:
                self.sums[token] = total
            self.counts[token] = self.counts.get(token, 0) + len(rows)
            self.samples[token] = self.samples.get(token, 0) + 1

    def mean(self, token: int) -> torch.Tensor:
        """Mean activation ``[L, N]`` (float64) at the positions that predicted ``token``."""
        return self.sums[token] / self.counts[token]

    def scores(self, token: int, down: Sequence[torch.Tensor], unembed: torch.Tensor):
        """The mean contribution score ``[L, N]`` of every neuron for ``token``."""
        ids = torch.tensor([token])
        return contribution_scores(self.mean(token)[None], ids, down, unembed)[0].cpu()

    def top(
        self, k: int, down: Sequence[torch.Tensor], unembed: torch.Tensor
    ) -> list[TokenNeurons]:
        """The ``k`` highest-scoring neurons of every token (most frequent token first).

        Ties go to the smaller flat index ``l * N + k``.
        """
        order = sorted(self.sums, key=lambda t: (-self.counts[t], t))
        width = self.info.width
        out = []
        for start in range(0, len(order), _TOKEN_CHUNK):
            chunk = order[start : start + _TOKEN_CHUNK]
            means = torch.stack([self.mean(t) for t in chunk])
            scores = contribution_scores(means, torch.tensor(chunk), down, unembed).flatten(1)
            ranked = torch.sort(scores, dim=1, descending=True, stable=True)
            for row, token in enumerate(chunk):
                flat = ranked.indices[row, :k].cpu()
                neurons = torch.stack([flat // width, flat % width], dim=1)
                out.append(
                    TokenNeurons(
                        token,
                        self.counts[token],
                        self.samples[token],
                        neurons,
                        ranked.values[row, :k].cpu(),
                    )
                )
        return out


def promoted_tokens(
    neurons: Iterable[tuple[int, int]],
    down: Sequence[torch.Tensor],
    unembed: torch.Tensor,
    n: int = 5,
) -> dict[tuple[int, int], list[int]]:
    """The ``n`` tokens whose logit each neuron's output weights raise most (``W_U W_down[:, k]``).

    At most ``_NEURON_CHUNK`` columns are projected at once: ``[vocab, chunk]`` at the largest.
    """
    by_layer: dict[int, list[int]] = {}
    for layer, neuron in dict.fromkeys(neurons):
        by_layer.setdefault(layer, []).append(neuron)
    out = {}
    for layer, columns in sorted(by_layer.items()):
        for start in range(0, len(columns), _NEURON_CHUNK):
            part = columns[start : start + _NEURON_CHUNK]
            weights = down[layer][:, torch.tensor(part, device=down[layer].device)]
            logits = unembed @ weights.to(unembed.dtype)  # [vocab, len(part)]
            top = logits.topk(min(n, logits.shape[0]), dim=0).indices.T.cpu()
            for neuron, ids in zip(part, top.tolist(), strict=True):
                out[(layer, neuron)] = ids
    return out
