"""Neuron mask files (`mmneuron-mask/1`): which neurons are specific to which domain.

A mask is checked against the model's components as a whole and refused on any mismatch; it is
never applied partially. Loading validates everything; problems are one-line FileFormatErrors.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from mmneuron_bench.errors import MaskMismatchError
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
from mmneuron_bench.models.components import ROLES, ComponentInfo, components_to_json

FORMAT = "mmneuron-mask/1"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class NeuronMask:
    """Per (domain, component) bool `[L, N]` tensors, true where a neuron is domain-specific."""

    domains: list[str]
    components: dict[str, ComponentInfo]
    model: dict
    method: str
    params: dict
    source: str | None  # sha256 hex of the stats file the mask came from, if any
    masks: dict[tuple[str, str], torch.Tensor]  # (domain, component) -> bool [L, N]
    unused: dict[str, list[int]] | None = None  # layers the model never reads (None: unknown)

    def in_unused_layers(self) -> dict[str, int]:
        """Per component, the neurons selected for any domain that sit in unused layers."""
        out = {}
        for c, layers in (self.unused or {}).items():
            union = torch.stack([self.masks[(d, c)] for d in self.domains]).any(0)
            out[c] = int(union[layers].sum()) if layers else 0
        return out

    def without_unused(self) -> NeuronMask:
        """The same mask with every neuron of an unused layer left out."""
        masks = {}
        for (d, c), m in self.masks.items():
            kept = m.clone()
            kept[(self.unused or {}).get(c, [])] = False
            masks[(d, c)] = kept
        params = {**self.params, "skip_unused": True}
        return replace(self, masks=masks, params=params)

    def select(
        self, domains: Sequence[str] | str = "all", roles: Iterable[str] | str = "all"
    ) -> dict[str, torch.Tensor]:
        """Union over `domains` of the masks of the components whose role is in `roles`.

        Both take "all", one name or a list of names. Components with other roles are left out
        of the result; an empty domain list gives all-false masks.
        """
        chosen = _names(domains, self.domains)
        for d in chosen:
            if d not in self.domains:
                raise MaskMismatchError(
                    f"the mask has no domain {d!r} (it has: {', '.join(self.domains)})"
                )
        wanted = set(_names(roles, ROLES))
        if not wanted <= set(ROLES):
            raise ValueError(f"unknown role(s) {sorted(wanted - set(ROLES))}; roles are {ROLES}")
        out = {}
        for c, info in self.components.items():
            if info.role in wanted:
                union = torch.zeros(info.layers, info.width, dtype=torch.bool)
                for d in chosen:
                    union |= self.masks[(d, c)]
                out[c] = union
        return out

    def count(self) -> dict[tuple[str, str], int]:
        """Number of selected neurons per (domain, component)."""
        return {key: int(m.sum()) for key, m in self.masks.items()}

    def check_matches(self, components: dict[str, ComponentInfo]) -> None:
        """Raise MaskMismatchError naming the first difference from the model's components."""
        problem = component_mismatch(self.components, components, "mask", "model")
        if problem:
            raise MaskMismatchError(f"the mask does not match the model: {problem}")

    def save(self, path: str | os.PathLike) -> None:
        """Validate, then write atomically (the target is complete or untouched)."""
        _validate(self, Path(path))
        metadata = {
            "format": FORMAT,
            "domains": json.dumps(self.domains),
            "components": components_to_json(self.components),
            "model": json.dumps(self.model),
            "method": self.method,
            "params": json.dumps(self.params),
        }
        if self.unused is not None:
            metadata["unused_layers"] = json.dumps(self.unused)
        if self.source is not None:
            metadata["source"] = self.source
        # Copies: masks are often views of one [D, L, N] tensor, which safetensors refuses.
        tensors = {
            f"{d}/{c}": self.masks[(d, c)].clone(memory_format=torch.contiguous_format)
            for d, c in _keys(self)
        }
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))

    @classmethod
    def load(cls, path: str | os.PathLike) -> NeuronMask:
        """Read and fully validate a mask file; raises FileFormatError on any problem."""
        path = Path(path)
        meta, tensors = read_safetensors(path, FORMAT)
        params = meta_json(meta, "params", path)
        if not isinstance(params, dict):
            raise format_error(path, "metadata 'params' is not a JSON object")
        mask = cls(
            domains=parse_domains(meta, path),
            components=parse_components(meta, path),
            model=parse_model(meta, path),
            method=meta_text(meta, "method", path),
            params=params,
            source=meta.get("source"),
            masks={},
            unused=parse_unused(meta, path),
        )
        _check_names(mask, path)  # _keys relies on the names
        mask.masks = {(d, c): tensors.pop(f"{d}/{c}", None) for d, c in _keys(mask)}
        if tensors:
            raise format_error(path, f"unexpected tensor {sorted(tensors)[0]!r}")
        _validate(mask, path)
        return mask


def _names(value: Iterable[str] | str, every: Sequence[str]) -> list[str]:
    """`value` as a list of names: "all" is `every`, a single string is one name."""
    if value == "all":
        return list(every)
    return [value] if isinstance(value, str) else list(value)


def _keys(mask: NeuronMask) -> list[tuple[str, str]]:
    return [(d, c) for d in mask.domains for c in mask.components]


def _check_names(mask: NeuronMask, path: Path) -> None:
    check_header(mask.domains, mask.components, path)
    if any("/" in d for d in mask.domains):
        raise format_error(path, "a domain name contains '/', which mask tensor keys reserve")


def _validate(mask: NeuronMask, path: Path) -> None:
    """Check the object is what a mask file promises: one bool [L, N] tensor per pair."""
    _check_names(mask, path)
    if not mask.method:
        raise format_error(path, "metadata 'method' is empty")
    if mask.source is not None and not _SHA256.fullmatch(mask.source):
        raise format_error(path, f"metadata 'source' is not a sha256 hex digest: {mask.source!r}")
    for c, layers in (mask.unused or {}).items():
        info = mask.components.get(c)
        if info is None or not all(0 <= layer < info.layers for layer in layers):
            raise format_error(path, f"metadata 'unused_layers' names layers {c!r} lacks")
    for d, c in _keys(mask):
        info = mask.components[c]
        check_tensor(
            path, f"{d}/{c}", mask.masks.get((d, c)), torch.bool, (info.layers, info.width)
        )
