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

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

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
    # A dispatched model's layers may sit on several devices: each product runs on its own.
    projection = torch.stack(
        [(rows.to(w.device) @ w.float()).to(rows.device) for w in down], dim=1
    )  # [T, L, N]
    return mean_activation.to(projection.device, torch.float32) * projection


class TokenActivations:
    """Per generated token: the sum of the llm activations at the positions predicting it.

    Processes that add disjoint samples are combined with :meth:`totals` and
    :meth:`add_totals` (float64 sums of the activations, added per process, then across).
    """

    def __init__(self, info: ComponentInfo, keep: set[int] | None = None):
        self.info = info
        self.keep = keep
        self.sums: dict[int, torch.Tensor] = {}  # float64 [L, N] on the CPU
        self.counts: dict[int, int] = {}
        self.samples: dict[int, int] = {}

    def add(self, tokens: Sequence[int], activations: torch.Tensor, image: int = 0) -> None:
        """Add one sample's positions: ``activations[i]`` ``[L, N]`` predicted ``tokens[i]``
        (``image``, the sample's place, does not matter to a mean over every position)."""
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

    def totals(self) -> tuple[dict, dict, dict]:
        """What :meth:`add_totals` of another process's instance needs (picklable)."""
        return self.sums, self.counts, self.samples

    def add_totals(self, totals: tuple[dict, dict, dict]) -> None:
        """Add the :meth:`totals` of an instance that saw other samples."""
        sums, counts, samples = totals
        for token, total in sums.items():
            self.sums[token] = self.sums[token] + total if token in self.sums else total
            self.counts[token] = self.counts.get(token, 0) + counts[token]
            self.samples[token] = self.samples.get(token, 0) + samples[token]

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
            weight = down[layer]
            weights = weight[:, torch.tensor(part, device=weight.device)]
            logits = unembed @ weights.to(unembed.device, unembed.dtype)  # [vocab, len(part)]
            top = logits.topk(min(n, logits.shape[0]), dim=0).indices.T.cpu()
            for neuron, ids in zip(part, top.tolist(), strict=True):
                out[(layer, neuron)] = ids
    return out


class FirstOccurrenceRanking:
    """Seed 002's ranking (``neurons find --aggregate paper``): per image and per word.

    For every generation, each word's first occurrence is scored at the position that predicts
    its first sub-token (the token that starts the word), and that image's top-``k`` neurons for
    the word are kept. The official code stops at these per-image lists; a token's neurons in
    the neurons file are those in the most of its per-image top-``k`` lists (ties: the larger
    mean score, then the smaller flat index ``l * N + n``). The official code keeps nouns only
    (a part-of-speech tagger); without one offline, every word is kept here (``--token``
    narrows the words).
    """

    def __init__(
        self,
        info: ComponentInfo,
        down: Sequence[torch.Tensor],
        unembed: torch.Tensor,
        k: int,
        word_starts: Callable[[Sequence[int]], list[bool]],
        keep: set[int] | None = None,
    ):
        self.info, self.down, self.unembed, self.k = info, down, unembed, k
        self.word_starts = word_starts
        self.keep = keep
        # (image, position, token, top flat indices, their scores), in the order added
        self.entries: list[tuple[int, int, int, torch.Tensor, torch.Tensor]] = []
        self.images = 0

    @property
    def per_image(self) -> dict[int, list[tuple[int, torch.Tensor, torch.Tensor]]]:
        """Per token (in the order of first appearance), its ``(image, neurons, scores)``
        lists in image order."""
        out: dict[int, list[tuple[int, torch.Tensor, torch.Tensor]]] = {}
        for image, _, token, flat, scores in sorted(self.entries, key=lambda e: e[:2]):
            out.setdefault(token, []).append((image, flat, scores))
        return out

    def totals(self) -> list[tuple]:
        """What :meth:`add_totals` of another process's instance needs (picklable)."""
        return self.entries

    def add_totals(self, entries: list[tuple]) -> None:
        """Add the per-image lists of an instance that saw other images."""
        self.entries += entries

    def add(self, tokens: Sequence[int], activations: torch.Tensor, image: int | None = None):
        """One generation: ``activations[i]`` ``[L, N]`` predicted ``tokens[i]``; ``image``
        is its place among all generations (default: the one after the last added)."""
        image = self.images if image is None else image
        self.images = image + 1
        seen: set[int] = set()
        for position, (token, starts) in enumerate(
            zip(tokens, self.word_starts(tokens), strict=True)
        ):
            if not starts or token in seen or (self.keep is not None and token not in self.keep):
                continue
            seen.add(token)
            score = (
                contribution_scores(
                    activations[position][None], torch.tensor([token]), self.down, self.unembed
                )[0]
                .flatten()
                .cpu()
            )
            ranked = torch.sort(score, descending=True, stable=True)
            self.entries.append(
                (image, position, token, ranked.indices[: self.k], ranked.values[: self.k])
            )

    def top(self, k: int) -> list[TokenNeurons]:
        """Each token's ``k`` neurons most often in its per-image top lists (most frequent
        token first)."""
        width = self.info.width
        per_image = self.per_image
        order = sorted(per_image, key=lambda t: (-len(per_image[t]), t))
        out = []
        for token in order:
            lists = per_image[token]
            count = torch.zeros(self.info.layers * width, dtype=torch.int64)
            total = torch.zeros(self.info.layers * width, dtype=torch.float64)
            for _, flat, scores in lists:
                count[flat] += 1
                total[flat] += scores.double()
            mean = torch.where(count > 0, total / count.clamp(min=1), torch.tensor(-torch.inf))
            # Lexicographic (count, mean score) descending, then flat index: sort by the
            # secondary key first, then stably by the primary.
            by_mean = torch.sort(mean, descending=True, stable=True).indices
            by_count = by_mean[torch.sort(count[by_mean], descending=True, stable=True).indices]
            flat = by_count[:k]
            neurons = torch.stack([flat // width, flat % width], dim=1)
            out.append(TokenNeurons(token, len(lists), len(lists), neurons, mean[flat].float()))
        return out

    def lists_json(self, text: Callable[[int], str]) -> list[dict]:
        """The per-image lists, as the official code saves them."""
        width = self.info.width
        return [
            {
                "image": image,
                "token": token,
                "text": text(token),
                "neurons": [[int(i) // width, int(i) % width] for i in flat],
                "scores": [float(v) for v in scores],
            }
            for token, lists in self.per_image.items()
            for image, flat, scores in lists
        ]


def word_starts(tokenizer: Any) -> Callable[[Sequence[int]], list[bool]]:
    """Which tokens of a generation start a word: the first token, and every token whose text,
    decoded after the previous ones, begins with white space (sentencepiece's and byte-level
    BPE's word markers decode to a space; a word-level tokenizer's every token does)."""

    special = set(tokenizer.all_special_ids)

    def starts(tokens: Sequence[int]) -> list[bool]:
        out, before = [], ""
        for i, token in enumerate(tokens):
            text = tokenizer.decode(list(tokens[: i + 1]))
            space = text[len(before) : len(before) + 1].isspace()
            out.append(token not in special and (i == 0 or space))
            before = text
        return out

    return starts
