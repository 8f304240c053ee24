"""The neurons file of ``neurons find``: a ``method: contribution`` mask with one domain per
token, its top ``llm`` neurons set, and the tokens' ids and texts in its params."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.models.adapter import Component
from mmneuron_bench.models.components import ComponentInfo
from mmneuron_bench.neurons.anatomy import llm_component
from mmneuron_bench.neurons.scores import TokenNeurons
from mmneuron_bench.neurons.tokens import token_domain, token_text

METHOD = "contribution"


def contribution_mask(
    components: Sequence[Component],
    model_meta: dict,
    found: Sequence[TokenNeurons],
    tokenizer: Any,
    params: dict,
) -> NeuronMask:
    """A ``method: contribution`` mask: one domain per token, its top llm neurons set.

    ``params["tokens"]`` maps each domain to the token's id, piece and text.
    """
    llm = llm_component(components)
    infos = {c.name: c.info for c in components}
    domains, masks, names = [], {}, {}
    for item in found:
        domain = token_domain(item.token, token_text(tokenizer, item.token))
        domains.append(domain)
        names[domain] = {
            "id": item.token,
            "piece": tokenizer.convert_ids_to_tokens(item.token),
            "text": token_text(tokenizer, item.token),
        }
        for c, info in infos.items():
            masks[(domain, c)] = no_neurons(info)
        masks[(domain, llm.name)][item.neurons[:, 0], item.neurons[:, 1]] = True
    if not domains:
        raise MMNeuronError("no generated token was kept, so there are no neurons to report")
    return NeuronMask(domains, infos, model_meta, METHOD, {**params, "tokens": names}, None, masks)


def check_contribution_mask(
    mask: NeuronMask, model_meta: dict, where: str, model: Any = None
) -> None:
    """Refuse a mask that is not a contribution mask of this very model (``model``, when
    given, also accepts a file written before 0.2, whose fingerprint hashed the load path)."""
    from mmneuron_bench.models.loading import same_model

    if mask.method != METHOD or "tokens" not in mask.params:
        raise MMNeuronError(f"{where} is a {mask.method!r} mask, not a {METHOD!r} neurons file")
    same = mask.model.get("fingerprint") == model_meta["fingerprint"]
    if not same and not (model is not None and same_model(model, mask.model)):
        raise MMNeuronError(
            f"{where} was found on another model ({mask.model.get('name_or_path')!r}, "
            "fingerprint differs)"
        )


def no_neurons(info: ComponentInfo) -> torch.Tensor:
    """An all-false ``[layers, width]`` selection of one component."""
    return torch.zeros(info.layers, info.width, dtype=torch.bool)
