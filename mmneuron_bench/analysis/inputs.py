"""The inputs an analysis runs: each task's documents as model inputs, one prefill at a time."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from mmneuron_bench.distributed import SINGLE, Processes
from mmneuron_bench.domains.tasks import domain_samples, sample_content
from mmneuron_bench.models.adapter import LoadedModel
from mmneuron_bench.models.placement import input_device


def task_inputs(
    loaded: LoadedModel,
    tasks: dict[str, Any],
    name: str,
    limit: int | None,
    processes: Processes = SINGLE,
) -> Iterator[dict[str, torch.Tensor]]:
    """Model inputs (batch 1, on the model's device) of a task's first ``limit`` documents;
    this process's share of them (:meth:`Processes.take`) when several run."""
    model = loaded.model
    device = input_device(model)
    for sample in processes.take(domain_samples(tasks, [name], limit)):
        image, question = sample_content(tasks, sample)
        inputs = loaded.adapter.build_inputs(loaded.processor, [image], [question])
        yield inputs.to(device).to(model.dtype)


def count_samples(tasks: dict[str, Any], names: Sequence[str], limit: int | None) -> int:
    """How many samples :func:`task_inputs` yields over ``names``."""
    return sum(len(domain_samples(tasks, [name], limit)) for name in names)


def prefill(loaded: LoadedModel, inputs: dict[str, torch.Tensor]) -> None:
    """One prefill forward, padding-invariant, without KV cache or full-sequence logits."""
    with torch.inference_mode():
        loaded.model(**loaded.adapter.forward_kwargs(inputs), use_cache=False, logits_to_keep=1)
