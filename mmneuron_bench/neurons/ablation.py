"""The causal check of multimodal neurons: p(token) where it was generated, with the token's top
neurons switched off, against as many random ``llm`` neurons."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mmneuron_bench.distributed import SINGLE, Processes
from mmneuron_bench.formats.edit import ColumnEdit, WeightEdit
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.interventions.mask import Deactivation
from mmneuron_bench.models.adapter import Component, LoadedModel
from mmneuron_bench.models.placement import weight
from mmneuron_bench.neurons.anatomy import llm_component
from mmneuron_bench.neurons.generation import Generation, batched, forced_probabilities
from mmneuron_bench.neurons.neurons_file import no_neurons
from mmneuron_bench.selection.random import random_neurons


@dataclass(frozen=True)
class Ablation:
    """How far p(token) falls, at the positions that generated it, with neurons switched off.

    Probabilities are teacher-forced on the unablated greedy generations and averaged over
    those positions; ``p_random`` is the mean over the random draws.
    """

    domain: str
    token: int
    neurons: int
    positions: int
    samples: int
    p_base: float
    p_top: float
    p_random: float
    p_random_draws: tuple[float, ...]


def ablate(
    loaded: LoadedModel,
    components: Sequence[Component],
    tasks: dict[str, Any],
    generations: Sequence[Generation],
    mask: NeuronMask,
    domains: Sequence[str],
    draws: int = 3,
    seed: int = 0,
    batch_size: int = 1,
    method: str = "zero",
    sigma: float = 0.0,
    model_meta: dict | None = None,
    processes: Processes = SINGLE,
) -> list[Ablation]:
    """For each token domain: p(token) with its top neurons switched off (or perturbed) versus
    as many random ones.

    ``method="zero"`` deactivates the neurons (:class:`~mmneuron_bench.interventions.mask.
    Deactivation`, 0 on every position of the prompt and the generation); the random neurons
    are drawn among the llm neurons outside the token's top set. ``method="noise"`` is seed
    002's perturbation: ``sigma * N(0, I)`` added to each neuron's output-weight column
    (:func:`noise_edit`, removed exactly afterwards); its random neurons are drawn from all llm
    neurons, as the official code draws them. A generator seeded by ``seed`` and the token id
    draws both (so a token's draws do not depend on which other tokens are ablated). With
    several ``processes`` each teacher-forces its share of the batches.
    """
    if method not in ("zero", "noise"):
        raise ValueError(f"method must be zero or noise, not {method!r}")
    llm = llm_component(components)
    results = []
    for domain in domains:
        token = mask.params["tokens"][domain]["id"]
        chosen = [g for g in generations if token in g.tokens]
        if not chosen:
            continue
        top = mask.masks[(domain, llm.name)]
        generator = torch.Generator().manual_seed(seed * 1_000_003 + token)
        count = int(top.sum())
        pool = torch.ones_like(top) if method == "noise" else ~top
        conditions = {"top": top} | {
            f"random{i}": random_neurons(pool, count, generator) for i in range(draws)
        }
        means = {"none": _mean_probability(loaded, tasks, chosen, token, batch_size, processes)}
        for name, selected in conditions.items():
            if method == "noise":
                edit = noise_edit(llm, selected, sigma, generator, model_meta or mask.model)
                context = edit.applied(loaded.model)
            else:
                context = Deactivation(components, _only(mask, llm.name, selected), "only")
            with context:
                means[name] = _mean_probability(loaded, tasks, chosen, token, batch_size, processes)
        random_means = tuple(means[f"random{i}"] for i in range(draws))
        results.append(
            Ablation(
                domain,
                token,
                int(top.sum()),
                sum(g.tokens.count(token) for g in chosen),
                len(chosen),
                means["none"],
                means["top"],
                sum(random_means) / draws if draws else float("nan"),
                random_means,
            )
        )
    return results


def noise_edit(
    llm: Component,
    selected: torch.Tensor,
    sigma: float,
    generator: torch.Generator,
    model_meta: dict,
) -> WeightEdit:
    """``sigma * N(0, I)`` (float32, from ``generator``) added to the output-weight column of
    every ``selected`` neuron (bool ``[L, N]``): a :class:`WeightEdit`, so it is removed exactly."""
    edits = []
    for layer, linear in enumerate(llm.outputs):
        columns = selected[layer].nonzero().flatten()
        if columns.numel() == 0:
            continue
        w = weight(linear)
        original = w[:, columns.to(w.device)].float().cpu()
        delta = sigma * torch.randn(original.shape, generator=generator)
        edits.append(ColumnEdit(llm.output_path(layer), columns, original, delta))
    params = {"rule": "w += sigma * N(0, I)", "sigma": sigma, "neurons": int(selected.sum())}
    return WeightEdit(dict(model_meta), params, edits)


def _only(mask: NeuronMask, component: str, selected: torch.Tensor) -> NeuronMask:
    """A one-domain mask (``only``) with ``selected`` in ``component`` and nothing elsewhere."""
    masks = {
        ("only", c): selected if c == component else no_neurons(info)
        for c, info in mask.components.items()
    }
    return NeuronMask(["only"], mask.components, mask.model, "ablation", {}, None, masks)


def _mean_probability(
    loaded: LoadedModel,
    tasks: dict[str, Any],
    generations: Sequence[Generation],
    token: int,
    batch_size: int,
    processes: Processes = SINGLE,
) -> float:
    """Mean p(token) over the positions where the generations chose ``token`` (each process
    computing its share of the batches)."""

    def probabilities(batch: Sequence[Generation]) -> list[torch.Tensor]:
        found = forced_probabilities(loaded, tasks, batch)
        return [
            probs[torch.tensor(g.tokens) == token, token].double()
            for g, probs in zip(batch, found, strict=True)
        ]

    per_batch = processes.map(probabilities, list(batched(generations, batch_size)))
    return float(torch.cat([v for values in per_batch for v in values]).mean())
