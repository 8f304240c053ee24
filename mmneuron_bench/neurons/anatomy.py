"""The parts of the language model that contribution scores read: the single ``llm``
component (its activations and, as the adapter declares it, its output projection ``W_down``)
and the LM head's unembedding ``W_U``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmneuron_bench.errors import AdapterError
from mmneuron_bench.models.adapter import Component, LoadedModel
from mmneuron_bench.models.placement import Weights, weight


def llm_component(components: Sequence[Component]) -> Component:
    """The model's single component with role ``llm``."""
    found = [c for c in components if c.role == "llm"]
    if len(found) != 1:
        raise AdapterError(f"the model has {len(found)} components with role 'llm', expected 1")
    return found[0]


def down_weights(component: Component) -> Sequence[torch.Tensor]:
    """Each layer's output projection weight ``W_down`` ``[hidden, width]`` (detached; an
    offloaded layer's is brought in when it is read)."""
    return Weights(component.outputs)


def unembedding(loaded: LoadedModel) -> torch.Tensor:
    """The LM head's weight ``W_U`` ``[vocab, hidden]`` (detached; a copy if offloaded)."""
    head = loaded.adapter.language_model(loaded.model).lm_head
    if not isinstance(head, nn.Linear):
        raise AdapterError(f"the LM head is a {type(head).__name__}, not a Linear layer")
    return weight(head)
