"""Activation statistics files (`mmneuron-stats/1`): per-domain neuron activation counts.

Counts are additive, so files recorded over disjoint samples (shards, GPUs) merge by summing.
Loading validates everything; every problem is a one-line `FileFormatError` naming the file.

Optional metadata, added without a new format version (older readers ignore it; files
without it still load; release 0.1.0 wrote none of them): ``prompt``, ``unused_layers``, and
``documents``: per domain, per task, the ids of the documents counted, as ranges
(``{"common": {"vqav2": "0-999"}}``, :mod:`mmneuron_bench.formats.documents`), so that
merging refuses documents counted twice. ``None`` in memory for files that do not say.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from mmneuron_bench.errors import MaskMismatchError
from mmneuron_bench.formats import documents as doc_ids
from mmneuron_bench.formats.atomic import atomic_write
from mmneuron_bench.formats.common import (
    check_header,
    check_tensor,
    component_mismatch,
    format_error,
    meta_json,
    meta_text,
    parse_components,
    parse_domains,
    parse_model,
    parse_unused,
    read_safetensors,
)
from mmneuron_bench.formats.documents import Documents
from mmneuron_bench.models.components import ComponentInfo, components_to_json
from mmneuron_bench.tables import Table

FORMAT = "mmneuron-stats/1"
TOKEN_SCOPES = ("all", "image", "text")
PROMPTS = ("default", "paper")


@dataclass
class ActivationStats:
    """Counts of one recording: tensors are keyed by component name, axis 0 is `domains`."""

    domains: list[str]
    components: dict[str, ComponentInfo]
    model: dict
    token_scope: str
    samples: dict[str, int]
    active: dict[str, torch.Tensor]  # int64 [D, L, N]: tokens with activation > 0
    tokens: dict[str, torch.Tensor]  # int64 [D, L]: tokens seen by the layer
    sum: dict[str, torch.Tensor]  # float64 [D, L, N]: sum of activation values
    prompt: str = "default"  # "default" (as lmms-eval prompts) or "paper" (the bare question)
    unused: dict[str, list[int]] | None = None  # layers the model never reads (None: unknown)
    documents: Documents | None = None  # {domain: {task: ids counted}} (None: unknown)

    @classmethod
    def empty(
        cls,
        domains: Sequence[str],
        components: dict[str, ComponentInfo],
        model: dict,
        token_scope: str,
        prompt: str = "default",
        unused: dict[str, list[int]] | None = None,
        documents: Documents | None = None,
    ) -> ActivationStats:
        """All-zero statistics, ready for a recorder to add counts into."""
        d = len(domains)
        return cls(
            prompt=prompt,
            unused=unused,
            documents=documents,
            domains=list(domains),
            components=dict(components),
            model=dict(model),
            token_scope=token_scope,
            samples={name: 0 for name in domains},
            active={
                c: torch.zeros(d, i.layers, i.width, dtype=torch.int64)
                for c, i in components.items()
            },
            tokens={c: torch.zeros(d, i.layers, dtype=torch.int64) for c, i in components.items()},
            sum={
                c: torch.zeros(d, i.layers, i.width, dtype=torch.float64)
                for c, i in components.items()
            },
        )

    def activation_probability(self, component: str) -> torch.Tensor:
        """`p[d, l, n] = active / tokens` as float64 `[D, L, N]`; 0 where a layer saw no tokens."""
        tokens = self.tokens[component].unsqueeze(-1)
        p = self.active[component].double() / tokens.clamp(min=1)
        return p.masked_fill_(tokens == 0, 0.0)

    def save(self, path: str | os.PathLike) -> None:
        """Validate, then write atomically (the target is complete or untouched)."""
        _validate(self, Path(path))
        tensors = {}
        for c in self.components:
            tensors[f"{c}.active"] = _own(self.active[c])
            tensors[f"{c}.tokens"] = _own(self.tokens[c])
            tensors[f"{c}.sum"] = _own(self.sum[c])
        metadata = {
            "format": FORMAT,
            "domains": json.dumps(self.domains),
            "components": components_to_json(self.components),
            "model": json.dumps(self.model),
            "token_scope": self.token_scope,
            "samples": json.dumps(self.samples),
            "prompt": self.prompt,
        }
        if self.unused is not None:
            metadata["unused_layers"] = json.dumps(self.unused)
        if self.documents is not None:
            metadata["documents"] = json.dumps(doc_ids.encode(self.documents))
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))

    @classmethod
    def load(cls, path: str | os.PathLike) -> ActivationStats:
        """Read and fully validate a stats file; raises FileFormatError on any problem."""
        path = Path(path)
        meta, tensors = read_safetensors(path, FORMAT)
        components = parse_components(meta, path)
        samples = meta_json(meta, "samples", path)
        if not isinstance(samples, dict):
            raise format_error(path, "metadata 'samples' is not a JSON object")
        stats = cls(
            domains=parse_domains(meta, path),
            components=components,
            model=parse_model(meta, path),
            token_scope=meta_text(meta, "token_scope", path),
            prompt=meta.get("prompt", "default"),
            unused=parse_unused(meta, path),
            documents=_parse_documents(meta, path, samples),
            samples=samples,
            active={c: tensors.pop(f"{c}.active", None) for c in components},
            tokens={c: tensors.pop(f"{c}.tokens", None) for c in components},
            sum={c: tensors.pop(f"{c}.sum", None) for c in components},
        )
        if tensors:
            raise format_error(path, f"unexpected tensor {sorted(tensors)[0]!r}")
        _validate(stats, path)
        return stats


def merge(stats_list: Sequence[ActivationStats]) -> ActivationStats:
    """Sum statistics recorded over disjoint samples of the same model, components and domains.

    Raises MaskMismatchError naming the first field that differs (model adapter or fingerprint,
    token scope, domains, components).
    """
    if not stats_list:
        raise ValueError("merge needs at least one stats object")
    first = stats_list[0]
    for i, other in enumerate(stats_list[1:], start=2):
        problem = stats_mismatch(first, other, "stats 1", f"stats {i}")
        for j, earlier in enumerate(stats_list[: i - 1], start=1):
            if problem is None and earlier.documents and other.documents:
                both = doc_ids.overlap(earlier.documents, other.documents)
                if both:
                    problem = f"{both} counted in stats {j} too"
        if problem:
            raise MaskMismatchError(f"cannot merge stats {i} into stats 1: {problem}")
    known = [s.documents for s in stats_list if s.documents is not None]
    return ActivationStats(
        documents=doc_ids.union(known) if len(known) == len(stats_list) else None,
        domains=list(first.domains),
        components=dict(first.components),
        model=dict(first.model),
        token_scope=first.token_scope,
        prompt=first.prompt,
        unused=first.unused,
        samples={d: sum(s.samples[d] for s in stats_list) for d in first.domains},
        active={c: sum(s.active[c] for s in stats_list) for c in first.components},
        tokens={c: sum(s.tokens[c] for s in stats_list) for c in first.components},
        sum={c: sum(s.sum[c] for s in stats_list) for c in first.components},
    )


def summary_table(stats: ActivationStats, title: str) -> Table:
    """Samples per domain and the tokens each component's first layer saw."""
    rows = [
        [d, str(stats.samples[d]), *(str(int(stats.tokens[c][i, 0])) for c in stats.components)]
        for i, d in enumerate(stats.domains)
    ]
    header = ["domain", "samples", *(f"{c} tokens" for c in stats.components)]
    return Table(f"{title} ({stats.token_scope} tokens)", header, rows)


def stats_mismatch(
    first: ActivationStats, other: ActivationStats, first_name: str, other_name: str
) -> str | None:
    """The first difference of model, token scope, domains or components, or None."""
    for field, a, b in (
        ("model adapter", first.model.get("adapter"), other.model.get("adapter")),
        ("model fingerprint", first.model.get("fingerprint"), other.model.get("fingerprint")),
        ("token_scope", first.token_scope, other.token_scope),
        ("prompt", first.prompt, other.prompt),
        ("domains", first.domains, other.domains),
    ):
        if a != b:
            return f"{field} differs ({b!r} vs {a!r})"
    return component_mismatch(first.components, other.components, first_name, other_name)


def _parse_documents(meta: dict[str, str], path: Path, samples: object) -> Documents | None:
    """The optional ``documents`` metadata (None for files written by 0.1.0)."""
    if "documents" not in meta:
        return None
    found = meta_json(meta, "documents", path)
    if not isinstance(found, dict) or not isinstance(samples, dict):
        raise format_error(path, "metadata 'documents' is not a JSON object")
    out: Documents = {}
    for domain, tasks in found.items():
        if not isinstance(tasks, dict) or not all(isinstance(v, str) for v in tasks.values()):
            raise format_error(path, f"metadata 'documents' of domain {domain!r} is not an object")
        at_most = samples.get(domain) if isinstance(samples.get(domain), int) else 0
        try:
            out[domain] = {t: doc_ids.decode_ids(text, at_most) for t, text in tasks.items()}
        except ValueError as exc:
            raise format_error(path, f"metadata 'documents' of domain {domain!r}: {exc}") from None
    return out


def _own(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous copy: safetensors refuses views that share storage with another tensor."""
    return tensor.clone(memory_format=torch.contiguous_format)


def _validate(stats: ActivationStats, path: Path) -> None:
    """Check the object is what a stats file promises: shapes, dtypes and counts agree."""
    check_header(stats.domains, stats.components, path)
    for c, layers in (stats.unused or {}).items():
        info = stats.components.get(c)
        if info is None or not all(0 <= layer < info.layers for layer in layers):
            raise format_error(path, f"metadata 'unused_layers' names layers {c!r} lacks")
    if stats.prompt not in PROMPTS:
        raise format_error(
            path, f"metadata 'prompt' is {stats.prompt!r}, expected default or paper"
        )
    if stats.token_scope not in TOKEN_SCOPES:
        scopes = ", ".join(TOKEN_SCOPES)
        raise format_error(
            path, f"metadata 'token_scope' is {stats.token_scope!r}, expected one of {scopes}"
        )
    bad = [k for k, v in stats.samples.items() if type(v) is not int or v < 0]
    if set(stats.samples) != set(stats.domains) or bad:
        raise format_error(path, "metadata 'samples' must give a count >= 0 for each domain")
    if stats.documents is not None:
        if set(stats.documents) != set(stats.domains):
            raise format_error(path, "metadata 'documents' must list the documents of each domain")
        for domain, tasks in stats.documents.items():
            if doc_ids.count(tasks) != stats.samples[domain]:
                raise format_error(
                    path,
                    f"metadata 'documents' lists {doc_ids.count(tasks)} documents of domain "
                    f"{domain!r}, 'samples' {stats.samples[domain]}",
                )
    d = len(stats.domains)
    for c, info in stats.components.items():
        active, tokens = stats.active.get(c), stats.tokens.get(c)
        check_tensor(path, f"{c}.active", active, torch.int64, (d, info.layers, info.width))
        check_tensor(path, f"{c}.tokens", tokens, torch.int64, (d, info.layers))
        check_tensor(
            path, f"{c}.sum", stats.sum.get(c), torch.float64, (d, info.layers, info.width)
        )
        if bool((active < 0).any()) or bool((tokens < 0).any()):
            raise format_error(path, f"component {c!r} has negative counts")
        if not bool(torch.isfinite(stats.sum[c]).all()):
            raise format_error(path, f"component {c!r} has sums that are NaN or infinite")
        if bool((active > tokens.unsqueeze(-1)).any()):
            raise format_error(
                path, f"component {c!r} has a neuron active on more tokens than its layer saw"
            )
