"""Loglikelihood requests scored with the adapter's own forward.

lmms-eval 0.7.3's ``llava_hf`` loglikelihood fails on transformers 5 and ``instructblip`` has
none, so the ``mmneuron`` model scores continuations itself, for every adapter family.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmneuron_bench.models.adapter import ModelAdapter
from mmneuron_bench.models.placement import input_device


def continuation_nll(
    adapter: ModelAdapter,
    processor: Any,
    model: nn.Module,
    image: Any,
    context: str,
    continuation: str,
) -> tuple[float, bool]:
    """``-log P(continuation | image, context)`` in nats and whether it is the greedy output.

    The prompt is the one recording uses (``adapter.build_inputs``: the chat template for
    LLaVA, the bare question for InstructBLIP). The continuation's tokens are those the
    tokenizer gives ``prompt + continuation`` beyond the tokens of ``prompt`` (the split
    lm-evaluation-harness uses); they are appended to the language model's input and the NLL
    is summed over them. lmms-eval's ``multiple_choice`` picks the choice with the smallest.
    """
    tokenizer = processor.tokenizer
    prompt = adapter.format_prompt(processor, context)
    n_prompt = len(tokenizer(prompt).input_ids)
    cont_ids = tokenizer(prompt + continuation).input_ids[n_prompt:]
    if not cont_ids:
        return 0.0, True
    inputs = adapter.build_inputs(processor, [image], [context])
    cont = torch.tensor([cont_ids], dtype=inputs["input_ids"].dtype)
    inputs = adapter.append_tokens(inputs, cont)
    device = input_device(model)
    batch = {
        key: value.to(device, model.dtype if value.is_floating_point() else None)
        for key, value in inputs.items()
    }
    with torch.inference_mode():
        logits = model(**adapter.forward_kwargs(batch)).logits
    k = len(cont_ids)
    log_probs = logits[0, -k - 1 : -1].float().log_softmax(-1)
    target = cont[0].to(log_probs.device)
    nll = -log_probs.gather(-1, target[:, None]).sum()
    return float(nll), bool((log_probs.argmax(-1) == target).all())
