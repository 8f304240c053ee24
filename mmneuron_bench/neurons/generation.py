"""Greedy generation that captures the ``llm`` activations predicting each new token, and
teacher-forced next-token probabilities of generated text.

Decoding is plain greedy whatever the checkpoint's ``generation_config`` asks for (beams,
penalties): every new token is the argmax of the model's own next-token distribution.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mmneuron_bench.distributed import SINGLE, Processes
from mmneuron_bench.domains.tasks import Sample, sample_content
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.models.adapter import Component, LoadedModel
from mmneuron_bench.models.hooks import forward_hooks
from mmneuron_bench.models.placement import input_device
from mmneuron_bench.neurons.anatomy import llm_component
from mmneuron_bench.neurons.scores import TokenActivations

GREEDY = {"do_sample": False, "num_beams": 1, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}


@dataclass(frozen=True)
class Generation:
    """The greedy continuation of one sample: its question and generated ids (through EOS)."""

    sample: Sample
    question: str
    tokens: tuple[int, ...]


@dataclass
class _LastPositions:
    """Forward hooks storing each call's last-position output of the llm activation modules.

    During ``generate`` the prefill's last position predicts the first new token and every
    decoding step's single position predicts the next one. An activation may come flattened
    to ``[batch * positions, width]`` (OPT): it is viewed as ``[batch, positions, width]``.
    """

    modules: Sequence[nn.Module]
    batch: int = 1
    steps: list[list[torch.Tensor]] = field(default_factory=list)

    @contextmanager
    def hooks(self, batch: int) -> Iterator[_LastPositions]:
        self.batch = batch
        self.steps = [[] for _ in self.modules]
        with forward_hooks(
            (module, lambda _m, _a, out, store=store: self._store(store, out))
            for module, store in zip(self.modules, self.steps, strict=True)
        ):
            yield self

    def _store(self, store: list[torch.Tensor], out: torch.Tensor) -> None:
        rows = out.reshape(self.batch, -1, out.shape[-1])
        store.append(rows[:, -1].detach().clone())

    def take(self) -> torch.Tensor:
        """The stored activations as ``[steps, batch, L, N]`` (on the first layer's device),
        then forget them."""
        counts = {len(s) for s in self.steps}
        if len(counts) != 1:
            raise MMNeuronError("the llm activation hooks fired a different number of times")
        device = self.steps[0][0].device
        stacked = torch.stack([torch.stack(s).to(device) for s in self.steps], dim=2)
        for s in self.steps:
            s.clear()
        return stacked


def _inputs(loaded: LoadedModel, images: list, questions: list[str]) -> Any:
    inputs = loaded.adapter.build_inputs(loaded.processor, images, questions)
    return inputs.to(input_device(loaded.model)).to(loaded.model.dtype)


def _eos_ids(model: nn.Module) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set() if eos is None else {eos} if isinstance(eos, int) else set(eos)


def _until_eos(row: list[int], eos: set[int]) -> tuple[int, ...]:
    for i, token in enumerate(row):
        if token in eos:
            return tuple(row[: i + 1])
    return tuple(row)


def generate(
    loaded: LoadedModel,
    tasks: dict[str, Any],
    samples: Sequence[Sample],
    prompt: str | None,
    max_new_tokens: int,
    batch_size: int = 1,
    activations: TokenActivations | None = None,
    components: Sequence[Component] | None = None,
    processes: Processes = SINGLE,
) -> Iterator[list[Generation]]:
    """Greedy continuations, one list per batch; optionally adds llm activations per token.

    ``prompt`` replaces every task question (for captioning); ``None`` keeps the question.
    With ``activations``, ``components`` (the model's resolved components) must be given.
    With several ``processes`` this one generates its share of the batches
    (:meth:`Processes.take`), each batch as one process would.
    """
    model = loaded.model
    eos = _eos_ids(model)
    capture = None
    if activations is not None:
        capture = _LastPositions(llm_component(components).modules)
    for start in processes.take(range(0, len(samples), batch_size)):
        batch = samples[start : start + batch_size]
        contents = [sample_content(tasks, s) for s in batch]
        questions = [q if prompt is None else prompt for _, q in contents]
        inputs = _inputs(loaded, [image for image, _ in contents], questions)
        if not bool(inputs["attention_mask"][:, -1].all()):
            raise MMNeuronError("the processor pads on the right; generation needs left padding")
        with torch.inference_mode(), capture.hooks(len(batch)) if capture else nullcontext():
            out = model.generate(**inputs, **GREEDY, max_new_tokens=max_new_tokens)
            steps = capture.take() if capture else None
        # generate() returns the prompt before the new tokens (BLIP-2's too, on transformers 5)
        ids = inputs["input_ids"]
        n = ids.shape[1]
        echoed = out.shape[1] >= n and torch.equal(out[:, :n], ids.to(out.device))
        new = (out[:, n:] if echoed else out).tolist()
        generations = [
            Generation(s, q, _until_eos(row, eos))
            for s, q, row in zip(batch, questions, new, strict=True)
        ]
        if steps is not None:
            if steps.shape[:2] != (len(new[0]), len(batch)):
                raise MMNeuronError(
                    f"generation ran {steps.shape[0]} forwards of {steps.shape[1]} rows for "
                    f"{len(new[0])} new tokens of {len(batch)} samples"
                )
            for b, generation in enumerate(generations):
                activations.add(generation.tokens, steps[: len(generation.tokens), b], start + b)
        yield generations


def forced_probabilities(
    loaded: LoadedModel, tasks: dict[str, Any], generations: Sequence[Generation]
) -> list[torch.Tensor]:
    """Next-token probabilities ``[len, vocab]`` (float32, CPU) at each generated position.

    One forward over prompt + generated tokens (teacher forcing); row ``i`` is the
    distribution from which ``tokens[i]`` was chosen. Padding gets no position.
    """
    model = loaded.model
    contents = [sample_content(tasks, g.sample) for g in generations]
    inputs = _inputs(loaded, [image for image, _ in contents], [g.question for g in generations])
    prompt_len = inputs["input_ids"].shape[1]
    longest = max(len(g.tokens) for g in generations)
    pad = loaded.processor.tokenizer.pad_token_id
    pad = 0 if pad is None else pad
    new = torch.full((len(generations), longest), pad, dtype=torch.long)
    new_mask = torch.zeros_like(new)
    for b, g in enumerate(generations):
        new[b, : len(g.tokens)] = torch.tensor(g.tokens)
        new_mask[b, : len(g.tokens)] = 1
    inputs = loaded.adapter.append_tokens(inputs, new, new_mask)
    with torch.inference_mode():
        logits = model(**loaded.adapter.forward_kwargs(inputs)).logits
    rows = logits[:, prompt_len - 1 : prompt_len - 1 + longest].float().softmax(-1).cpu()
    return [rows[b, : len(g.tokens)] for b, g in enumerate(generations)]


def batched(items: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of ``items`` of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
