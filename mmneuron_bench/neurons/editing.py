"""Neuron-level knowledge editing: move a token's top neurons from its unembedding to another's.

For each top neuron ``(l, k)`` of the source token ``s`` (from a contribution neurons file),
with ``w = W_down[l][:, k]`` and the unit unembedding rows ``û_s = u_s / |u_s|`` and
``û_t = u_t / |u_t|`` of source and target::

    w' = w + strength * (w . û_s) * (û_t - û_s)

The part of the neuron's output that lies along the source's unembedding is transferred to the
target's: at ``strength = 1`` (and orthogonal unembeddings) ``w' . û_s = 0`` and ``w' . û_t``
grows by the ``w . û_s`` that was taken from the source; ``0`` changes nothing, values in
between move part of it, values above 1 push the neuron against the source. The result is a
:class:`~mmneuron_bench.formats.edit.WeightEdit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.formats.edit import ColumnEdit, WeightEdit
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.models.adapter import Component, LoadedModel
from mmneuron_bench.models.placement import weight
from mmneuron_bench.neurons.anatomy import llm_component, unembedding
from mmneuron_bench.neurons.generation import Generation, batched, forced_probabilities, generate
from mmneuron_bench.neurons.tokens import token_text

RULE = "w += strength * (w . u_s/|u_s|) * (u_t/|u_t| - u_s/|u_s|)"


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
    for layer, module in enumerate(llm.outputs):
        columns = selected[layer].nonzero().flatten()
        if columns.numel() == 0:
            continue
        w = weight(module)
        original = w[:, columns.to(w.device)].float().cpu()
        along = u_s @ original  # [m]: each column's component along û_s
        delta = strength * (u_t - u_s)[:, None] * along[None, :]
        edits.append(ColumnEdit(llm.output_path(layer), columns, original, delta))
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
