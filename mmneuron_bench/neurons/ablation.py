"""The causal check of multimodal neurons: p(token) where it was generated, with the token's top
neurons switched off, against as many random ``llm`` neurons."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.interventions.mask import Deactivation
from mmneuron_bench.models.adapter import Component, LoadedModel
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
) -> list[Ablation]:
    """For each token domain: p(token) with its top neurons off versus as many random ones.

    The random neurons are drawn among the llm neurons outside the token's top set, with a
    generator seeded by ``seed`` and the token id (so a token's draws do not depend on which
    other tokens are ablated). Deactivation is
    :class:`~mmneuron_bench.interventions.mask.Deactivation` (zero) on every position of the
    prompt and the generation.
    """
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
        conditions = {"top": top} | {
            f"random{i}": random_neurons(~top, count, generator) for i in range(draws)
        }
        control = NeuronMask(
            ["none", *conditions],
            mask.components,
            mask.model,
            "ablation",
            {},
            None,
            {
                (d, c): conditions[d] if d in conditions and c == llm.name else no_neurons(info)
                for d in ["none", *conditions]
                for c, info in mask.components.items()
            },
        )
        means = {}
        for condition in control.domains:
            with Deactivation(components, control, domains=condition):
                means[condition] = _mean_probability(loaded, tasks, chosen, token, batch_size)
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


def _mean_probability(
    loaded: LoadedModel,
    tasks: dict[str, Any],
    generations: Sequence[Generation],
    token: int,
    batch_size: int,
) -> float:
    """Mean p(token) over the positions where the generations chose ``token``."""
    values = []
    for batch in batched(generations, batch_size):
        for g, probs in zip(batch, forced_probabilities(loaded, tasks, batch), strict=True):
            at = torch.tensor(g.tokens) == token
            values.append(probs[at, token].double())
    return float(torch.cat(values).mean())
