"""The lmms-eval tasks an analysis runs: the mask domain(s) of each, and its samples as inputs.

A task's domain is given explicitly (``--domain TASK=DOMAIN``) or found as the ``mmneuron``
lmms-eval model and ``run --grid`` find it (:func:`mmneuron_bench.lmms.interventions.auto_domain`):
the mask domain named like the task, else the one that is a ``_``-separated part of the task
name, else the task YAML's ``metadata: {domain: NAME}``. Several domains are ``+``-joined
(``medical+documents``) and switched off together.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from mmneuron_bench.adapter import LoadedModel
from mmneuron_bench.domains import domain_samples, sample_content
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.lmms.interventions import AUTO, auto_domain, parse_domain
from mmneuron_bench.record import real_positions


def parse_task_domains(values: Sequence[str]) -> dict[str, str]:
    """``("vqa=common", ...)`` -> ``{"vqa": "common"}``: explicit domains of tasks."""
    mapping: dict[str, str] = {}
    for value in values:
        task, sep, domain = (part.strip() for part in value.partition("="))
        if not sep or not task or not domain:
            raise MMNeuronError(f"--domain {value!r} is not of the form TASK=DOMAIN")
        if task in mapping:
            raise MMNeuronError(f"--domain gives task {task!r} twice")
        mapping[task] = domain
    return mapping


def resolve_task_domains(
    tasks: dict[str, Any], mask_domains: Sequence[str], explicit: dict[str, str]
) -> dict[str, str]:
    """The ``+``-joined mask domain(s) of every task; a task without one is a one-line error."""
    unknown = sorted(set(explicit) - set(tasks))
    if unknown:
        raise MMNeuronError(f"--domain names task {unknown[0]!r}, which is not among --tasks")
    domains = {}
    for name, task in tasks.items():
        given = parse_domain(explicit.get(name, AUTO), mask_domains)
        if given != AUTO:
            domains[name] = "+".join(given)
            continue
        metadata = task.config.metadata if isinstance(task.config.metadata, dict) else {}
        try:
            domains[name] = "+".join(auto_domain(name, mask_domains, metadata))
        except MMNeuronError as exc:
            raise MMNeuronError(f"{exc}; or give --domain {name}=DOMAIN") from None
    return domains


def task_inputs(
    loaded: LoadedModel, tasks: dict[str, Any], name: str, limit: int | None
) -> Iterator[dict[str, torch.Tensor]]:
    """Model inputs (batch 1, on the model's device) of a task's first ``limit`` documents."""
    model = loaded.model
    device = next(model.parameters()).device
    for sample in domain_samples(tasks, [name], limit):
        image, question = sample_content(tasks, sample)
        inputs = loaded.adapter.build_inputs(loaded.processor, [image], [question])
        yield inputs.to(device).to(model.dtype)


def count_samples(tasks: dict[str, Any], names: Sequence[str], limit: int | None) -> int:
    """How many samples :func:`task_inputs` yields over ``names``."""
    return sum(len(domain_samples(tasks, [name], limit)) for name in names)


def prefill(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> None:
    """One prefill forward, padding-invariant, without KV cache or full-sequence logits."""
    with torch.inference_mode():
        model(
            **inputs,
            position_ids=real_positions(inputs["attention_mask"]),
            use_cache=False,
            logits_to_keep=1,
        )
