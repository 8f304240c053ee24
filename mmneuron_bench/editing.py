"""Neuron-level knowledge editing: move a token's top neurons from its unembedding to another's.

For each top neuron ``(l, k)`` of the source token ``s`` (from a contribution neurons file),
with ``w = W_down[l][:, k]`` and the unit unembedding rows ``û_s = u_s / |u_s|`` and
``û_t = u_t / |u_t|`` of source and target::

    w' = w + strength * (w . û_s) * (û_t - û_s)

The part of the neuron's output that lies along the source's unembedding is transferred to the
target's: at ``strength = 1`` (and orthogonal unembeddings) ``w' . û_s = 0`` and ``w' . û_t``
grows by the ``w . û_s`` that was taken from the source; ``0`` changes nothing, values in
between move part of it, values above 1 push the neuron against the source.

An edit is a small safetensors file (``mmneuron-edit/1``): for each edited ``W_down`` module
its column indices, the original columns and the additive deltas (float32). Applying writes
``original + delta`` into the columns; removing writes the originals back, so the weights are
bit-identical to before. Both refuse a model whose fingerprint, shapes or current columns do not
match, before changing anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from mmneuron_bench.adapter import Component, LoadedModel
from mmneuron_bench.atomic import atomic_write
from mmneuron_bench.contribution import (
    Generation,
    batched,
    down_projections,
    forced_probabilities,
    generate,
    llm_component,
    token_text,
    unembedding,
)
from mmneuron_bench.errors import MaskMismatchError, MMNeuronError
from mmneuron_bench.mask_file import NeuronMask
from mmneuron_bench.stats_file import format_error, meta_json, parse_model, read_safetensors

FORMAT = "mmneuron-edit/1"
RULE = "w += strength * (w . u_s/|u_s|) * (u_t/|u_t| - u_s/|u_s|)"


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
        self._check_fingerprint(model)
        out = []
        for edit in self.edits:
            try:
                module = model.get_submodule(edit.module)
            except AttributeError:
                raise MaskMismatchError(
                    f"the edit's module '{edit.module}' is not in {type(model).__name__}"
                ) from None
            weight = getattr(module, "weight", None)
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

    def _check_fingerprint(self, model: nn.Module) -> None:
        from mmneuron_bench.loading import model_identity
        from mmneuron_bench.plugins import get_registry

        adapter = get_registry().adapter(self.model.get("adapter", ""))
        found = model_identity(LoadedModel(adapter, model, None), "")["fingerprint"]
        if found != self.model.get("fingerprint"):
            raise MaskMismatchError(
                f"the edit was made for another model ({self.model.get('name_or_path')!r}): "
                "the fingerprints differ"
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
    return ColumnEdit(module, columns, original, delta)


def compute_edit(
    loaded: LoadedModel,
    components: Sequence[Component],
    model_meta: dict,
    mask: NeuronMask,
    domain: str,
    target: int,
    strength: float,
    params: dict | None = None,
) -> WeightEdit:
    """The edit moving the top neurons of token ``domain`` (in ``mask``) toward ``target``."""
    llm = llm_component(components)
    source = mask.params["tokens"][domain]["id"]
    if source == target:
        raise MMNeuronError("the source and the target are the same token")
    unembed = unembedding(loaded)
    u_s = _unit(unembed[source])
    u_t = _unit(unembed[target])
    selected = mask.masks[(domain, llm.name)]
    edits = []
    for layer, (path, module) in enumerate(down_projections(loaded.model, llm)):
        columns = selected[layer].nonzero().flatten()
        if columns.numel() == 0:
            continue
        original = module.weight[:, columns.to(module.weight.device)].detach().float().cpu()
        along = u_s @ original  # [m]: each column's component along û_s
        delta = strength * (u_t - u_s)[:, None] * along[None, :]
        edits.append(ColumnEdit(path, columns, original, delta))
    info = {
        "source": {"id": source, "domain": domain, "text": mask.params["tokens"][domain]["text"]},
        "target": {"id": target, "text": token_text(loaded.processor.tokenizer, target)},
        "strength": strength,
        "rule": RULE,
        "neurons": sum(len(e.columns) for e in edits),
    }
    return WeightEdit(dict(model_meta), {**info, **(params or {})}, edits)


def _unit(row: torch.Tensor) -> torch.Tensor:
    row = row.detach().float().cpu()
    return row / row.norm()


def edit_effects(
    loaded: LoadedModel,
    tasks: dict[str, Any],
    generations: Sequence[Generation],
    edit: WeightEdit,
    prompt: str | None,
    max_new_tokens: int,
    batch_size: int = 1,
) -> dict:
    """What an edit does, teacher-forced on the unedited greedy generations and regenerated.

    ``source_positions``: where the source was generated: mean p(source) and p(target) before
    and after, and how often the target (or still the source) is the argmax after.
    ``other_positions``: every other generated position: mean |change| of p(generated token),
    mean total-variation distance of the whole next-token distribution, share whose argmax
    changed. ``samples``: share of greedy outputs that changed, with and without the source.
    """
    if not generations:
        raise MMNeuronError("there are no samples to measure the edit on")
    source, target = edit.params["source"]["id"], edit.params["target"]["id"]
    at_source: dict[str, list[torch.Tensor]] = {k: [] for k in ("ps0", "ps1", "pt0", "pt1", "arg")}
    other: dict[str, list[torch.Tensor]] = {k: [] for k in ("dp", "tv", "changed")}
    for batch in batched(generations, batch_size):
        before = forced_probabilities(loaded, tasks, batch)
        with edit.applied(loaded.model):
            after = forced_probabilities(loaded, tasks, batch)
        for g, p0, p1 in zip(batch, before, after, strict=True):
            tokens = torch.tensor(g.tokens)
            hit = tokens == source
            at_source["ps0"].append(p0[hit, source])
            at_source["ps1"].append(p1[hit, source])
            at_source["pt0"].append(p0[hit, target])
            at_source["pt1"].append(p1[hit, target])
            at_source["arg"].append(p1[hit].argmax(-1))
            rest = ~hit
            chosen = tokens[rest, None]
            other["dp"].append((p1[rest].gather(1, chosen) - p0[rest].gather(1, chosen)).abs())
            other["tv"].append(0.5 * (p1[rest] - p0[rest]).abs().sum(-1))
            other["changed"].append(p1[rest].argmax(-1) != p0[rest].argmax(-1))
    with edit.applied(loaded.model):
        samples = [g.sample for g in generations]
        regenerated = [
            g
            for b in generate(loaded, tasks, samples, prompt, max_new_tokens, batch_size)
            for g in b
        ]
    arg = torch.cat(at_source["arg"])
    changed = [a.tokens != b.tokens for a, b in zip(generations, regenerated, strict=True)]
    has_source = [source in g.tokens for g in generations]
    return {
        "source_positions": {
            "count": len(arg),
            "p_source_before": _mean(at_source["ps0"]),
            "p_source_after": _mean(at_source["ps1"]),
            "p_target_before": _mean(at_source["pt0"]),
            "p_target_after": _mean(at_source["pt1"]),
            "argmax_target_after": _share(arg == target),
            "argmax_source_after": _share(arg == source),
        },
        "other_positions": {
            "count": int(sum(len(x) for x in other["tv"])),
            "mean_abs_change_p_generated": _mean(other["dp"]),
            "mean_total_variation": _mean(other["tv"]),
            "argmax_changed": _share(torch.cat(other["changed"])),
        },
        "samples": {
            "with_source": sum(has_source),
            "with_source_output_changed": _share_of(changed, has_source, True),
            "without_source": len(has_source) - sum(has_source),
            "without_source_output_changed": _share_of(changed, has_source, False),
        },
    }


def _mean(parts: list[torch.Tensor]) -> float | None:
    values = torch.cat([p.flatten().double() for p in parts])
    return float(values.mean()) if values.numel() else None


def _share(flags: torch.Tensor) -> float | None:
    return float(flags.double().mean()) if flags.numel() else None


def _share_of(changed: list[bool], group: list[bool], member: bool) -> float | None:
    picked = [c for c, g in zip(changed, group, strict=True) if g == member]
    return sum(picked) / len(picked) if picked else None
