"""An independent scoring of a multiple-choice answer, to check the loglikelihood requests."""

from __future__ import annotations

import torch


def choice_nll(processor, model, image, context: str, choice: str) -> float:
    """The processor on the chat prompt plus the choice, in one piece; the NLL of the
    choice's tokens."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": context}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    whole = processor(images=[image], text=[prompt + choice], return_tensors="pt")
    tokenizer = processor.tokenizer
    k = len(tokenizer(prompt + choice).input_ids) - len(tokenizer(prompt).input_ids)
    with torch.no_grad():
        logits = model(**whole).logits[0].double().log_softmax(-1)
    ids = whole["input_ids"][0]
    n = ids.shape[0]
    return -sum(float(logits[n - k - 1 + i, ids[n - k + i]]) for i in range(k))
