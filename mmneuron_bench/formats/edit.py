"""Weight edit files (``mmneuron-edit/1``): a reversible change of output-weight columns.

An edit is a small safetensors file: for each edited output projection (``W_down``) its column
indices, the original columns and the additive deltas (float32). Applying writes
``original + delta`` into the columns; removing writes the originals back, so the weights are
bit-identical to before. Both refuse a model whose fingerprint, shapes or current columns do not
match, before changing anything. How edits are computed: :mod:`mmneuron_bench.neurons.editing`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from mmneuron_bench.errors import MaskMismatchError, MMNeuronError
from mmneuron_bench.formats.atomic import atomic_write
from mmneuron_bench.formats.common import format_error, meta_json, parse_model, read_safetensors

FORMAT = "mmneuron-edit/1"


@dataclass(frozen=True)
class ColumnEdit:
    """The edited columns of one ``W_down`` module (``[hidden, width]`` weight)."""

    module: str
    columns: torch.Tensor  # int64 [m], distinct
    original: torch.Tensor  # float32 [hidden, m]
    delta: torch.Tensor  # float32 [hidden, m]

    def edited(self) -> torch.Tensor:
        return self.original + self.delta


@dataclass
class WeightEdit:
    """A reversible change of ``W_down`` columns, made for one model (``model`` identity)."""

    model: dict
    params: dict
    edits: list[ColumnEdit]

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (the target is complete or untouched)."""
        tensors = {}
        for i, edit in enumerate(self.edits):
            tensors[f"{i}.columns"] = edit.columns.contiguous()
            tensors[f"{i}.original"] = edit.original.contiguous()
            tensors[f"{i}.delta"] = edit.delta.contiguous()
        metadata = {
            "format": FORMAT,
            "model": json.dumps(self.model),
            "params": json.dumps(self.params),
            "modules": json.dumps([e.module for e in self.edits]),
        }
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))

    @classmethod
    def load(cls, path: str | os.PathLike) -> WeightEdit:
        """Read and validate an edit file; any problem is a one-line FileFormatError."""
        path = Path(path)
        meta, tensors = read_safetensors(path, FORMAT)
        params = meta_json(meta, "params", path)
        modules = meta_json(meta, "modules", path)
        if not isinstance(params, dict):
            raise format_error(path, "metadata 'params' is not a JSON object")
        if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
            raise format_error(path, "metadata 'modules' is not a JSON list of module paths")
        edits = []
        for i, module in enumerate(modules):
            parts = [tensors.pop(f"{i}.{k}", None) for k in ("columns", "original", "delta")]
            edits.append(_checked(path, i, module, *parts))
        if tensors:
            raise format_error(path, f"unexpected tensor {sorted(tensors)[0]!r}")
        return cls(parse_model(meta, path), params, edits)

    def apply(self, model: nn.Module) -> None:
        """Write the edited columns; refuses (changing nothing) unless the originals are there."""
        targets = self._targets(model, "original")
        with torch.no_grad():
            for weight, edit in targets:
                weight[:, edit.columns.to(weight.device)] = _cast(edit.edited(), weight)

    def remove(self, model: nn.Module) -> None:
        """Write the original columns back; refuses (changing nothing) unless the edit is on."""
        targets = self._targets(model, "edited")
        with torch.no_grad():
            for weight, edit in targets:
                weight[:, edit.columns.to(weight.device)] = _cast(edit.original, weight)

    def check_model(self, model: nn.Module) -> None:
        """Refuse, before anything runs, a model this edit was not made for (or already edited)."""
        self._targets(model, "original")

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[WeightEdit]:
        """Apply on entry, remove on exit (also on an exception)."""
        self.apply(model)
        try:
            yield self
        finally:
            self.remove(model)

    def _targets(self, model: nn.Module, expect: str) -> list[tuple[torch.Tensor, ColumnEdit]]:
        """The weight of every edited module, after checking model, shapes and columns."""
        self.check_fingerprint(model)
        out = []
        for edit in self.edits:
            try:
                module = model.get_submodule(edit.module)
            except AttributeError:
                raise MaskMismatchError(
                    f"the edit's module '{edit.module}' is not in {type(model).__name__}"
                ) from None
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.device.type == "meta":
                raise MMNeuronError(
                    f"'{edit.module}' is offloaded (--device auto): a weight edit needs its "
                    "weights on a device; give --max-memory room for them"
                )
            hidden = edit.original.shape[0]
            if (
                not isinstance(weight, torch.Tensor)
                or weight.dim() != 2
                or weight.shape[0] != hidden
                or int(edit.columns.max()) >= weight.shape[1]
            ):
                shape = None if weight is None else list(weight.shape)
                raise MaskMismatchError(
                    f"the edit does not fit '{edit.module}': weight shape {shape}, the edit "
                    f"needs [{hidden}, > {int(edit.columns.max())}]"
                )
            want = edit.original if expect == "original" else edit.edited()
            current = weight[:, edit.columns.to(weight.device)]
            if not torch.equal(current, _cast(want, weight)):
                raise MMNeuronError(
                    f"the columns of '{edit.module}' are not the {expect} ones"
                    + (
                        " (the edit is applied already, or the weights differ from those it "
                        "was made on)"
                        if expect == "original"
                        else " (the edit is not applied)"
                    )
                )
            out.append((weight, edit))
        return out

    def check_fingerprint(self, model: nn.Module) -> None:
        """Refuse a model (loaded, or its skeleton) of another config or parameter shapes."""
        from mmneuron_bench.models.identity import other_model
        from mmneuron_bench.models.loading import same_model

        if not same_model(self.model, model):
            raise MaskMismatchError(
                f"{other_model(self.model, model, 'the edit')}; an edit applies to the weights "
                "it was made on only"
            )


def _cast(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return values.to(weight.device, weight.dtype)


def _checked(
    path: Path,
    i: int,
    module: str,
    columns: torch.Tensor | None,
    original: torch.Tensor | None,
    delta: torch.Tensor | None,
) -> ColumnEdit:
    """One module's tensors, checked for presence, dtype and agreeing shapes."""
    for key, tensor, dtype in (
        ("columns", columns, torch.int64),
        ("original", original, torch.float32),
        ("delta", delta, torch.float32),
    ):
        if tensor is None:
            raise format_error(path, f"tensor '{i}.{key}' is missing")
        if tensor.dtype != dtype:
            raise format_error(path, f"tensor '{i}.{key}' has dtype {tensor.dtype}, not {dtype}")
    m = columns.shape[0] if columns.dim() == 1 else -1
    if m < 1 or original.dim() != 2 or original.shape[1] != m or delta.shape != original.shape:
        raise format_error(path, f"the tensors of module {i} ('{module}') disagree in shape")
    if bool((columns < 0).any()) or len(set(columns.tolist())) != m:
        raise format_error(path, f"the columns of module {i} are negative or repeated")
    for key, tensor in (("original", original), ("delta", delta)):
        if not bool(torch.isfinite(tensor).all()):
            raise format_error(path, f"tensor '{i}.{key}' has NaN or infinite values")
    return ColumnEdit(module, columns, original, delta)
