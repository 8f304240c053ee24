"""What the file formats share: reading safetensors files whose metadata says their format,
parsing and checking metadata and tensors, comparing components, hashing files.

Every problem is a one-line :class:`FileFormatError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open

from mmneuron_bench.errors import FileFormatError
from mmneuron_bench.models.components import ComponentInfo, components_from_json


def format_error(path: Path, problem: str) -> FileFormatError:
    """A one-line FileFormatError naming the file and the problem."""
    return FileFormatError(f"{path}: {' '.join(problem.split())}")


def read_safetensors(path: Path, fmt: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Metadata and tensors of a safetensors file whose `format` metadata is `fmt`."""
    if not path.exists():
        raise format_error(path, "no such file")
    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for damaged files
        raise format_error(path, f"not a readable safetensors file ({e})") from e
    found = meta.get("format")
    if found != fmt:
        why = "it has no 'format' metadata" if found is None else f"its format is {found!r}"
        raise format_error(path, f"not a {fmt} file ({why})")
    return meta, tensors


def meta_text(meta: dict[str, str], key: str, path: Path) -> str:
    """The metadata value `key`, which must be present."""
    if key not in meta:
        raise format_error(path, f"metadata {key!r} is missing")
    return meta[key]


def meta_json(meta: dict[str, str], key: str, path: Path) -> object:
    """Parse the JSON metadata value `key`."""
    text = meta_text(meta, key, path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise format_error(path, f"metadata {key!r} is not valid JSON ({e})") from e


def parse_domains(meta: dict[str, str], path: Path) -> list[str]:
    """The `domains` metadata: a JSON list of names (checked by `check_header`)."""
    domains = meta_json(meta, "domains", path)
    if not isinstance(domains, list):
        raise format_error(path, "metadata 'domains' is not a JSON list")
    return domains


def parse_components(meta: dict[str, str], path: Path) -> dict[str, ComponentInfo]:
    """The `components` metadata as ComponentInfo objects."""
    text = meta_text(meta, "components", path)
    try:
        return components_from_json(text)
    except (ValueError, KeyError, TypeError) as e:
        raise format_error(path, f"metadata 'components' is invalid ({e})") from e


def parse_model(meta: dict[str, str], path: Path) -> dict:
    """The `model` metadata: a JSON object (adapter, name_or_path, fingerprint)."""
    model = meta_json(meta, "model", path)
    if not isinstance(model, dict):
        raise format_error(path, "metadata 'model' is not a JSON object")
    return model


def parse_unused(meta: dict[str, str], path: Path) -> dict[str, list[int]] | None:
    """The optional ``unused_layers`` metadata: ``{component: [layers the model never reads]}``
    (None for files written before 0.2, which do not say)."""
    if "unused_layers" not in meta:
        return None
    unused = meta_json(meta, "unused_layers", path)
    if not isinstance(unused, dict) or not all(
        isinstance(v, list) and all(type(i) is int for i in v) for v in unused.values()
    ):
        raise format_error(path, "metadata 'unused_layers' is not a JSON object of layer lists")
    return unused


def check_header(domains: list, components: dict[str, ComponentInfo], path: Path) -> None:
    """Domains are distinct non-empty names and there is at least one component."""
    if not domains or not all(isinstance(d, str) and d for d in domains):
        raise format_error(path, "metadata 'domains' must be a non-empty list of names")
    if len(set(domains)) != len(domains):
        raise format_error(path, "metadata 'domains' names a domain twice")
    if not components:
        raise format_error(path, "metadata 'components' lists no component")


def check_tensor(
    path: Path, key: str, tensor: torch.Tensor | None, dtype: torch.dtype, shape: tuple[int, ...]
) -> None:
    """The tensor `key` exists with the given dtype and shape."""
    if tensor is None:
        raise format_error(path, f"tensor {key!r} is missing")
    if tensor.dtype != dtype:
        raise format_error(path, f"tensor {key!r} has dtype {tensor.dtype}, expected {dtype}")
    if tuple(tensor.shape) != shape:
        raise format_error(
            path,
            f"tensor {key!r} has shape {list(tensor.shape)}, the metadata implies {list(shape)}",
        )


def component_mismatch(
    ours: dict[str, ComponentInfo], theirs: dict[str, ComponentInfo], our_name: str, their_name: str
) -> str | None:
    """Describe the first difference between two component sets, or None if they are equal."""
    for name in theirs:
        if name not in ours:
            return f"component {name!r} of the {their_name} is missing from the {our_name}"
    for name, info in ours.items():
        if name not in theirs:
            return f"the {our_name} has component {name!r}, which the {their_name} lacks"
        other = theirs[name]
        if info != other:
            return (
                f"component {name!r} is {_describe(info)} in the {our_name} "
                f"but {_describe(other)} in the {their_name}"
            )
    return None


def _describe(info: ComponentInfo) -> str:
    return f"role {info.role}, {info.layers} layers x {info.width} neurons"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (a mask's ``source``, the provenance of every input file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
