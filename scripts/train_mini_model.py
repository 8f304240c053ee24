"""Train the miniature LLaVA-NeXT on the synthetic train splits, from its seed, on the CPU.

    python scripts/train_mini_model.py --out mmneuron_bench/assets/mini_llava_next

The run is deterministic (seeded init and data order, deterministic kernels, fixed thread
count): the same seed, steps and thread count give the same weights on the same machine.
One thread is the default: on a shared machine two threads of one process wait on each other
far longer than they gain (the shipped checkpoint took 20 minutes on one busy core).
Prompts are built by the llava_next adapter's ``format_prompt`` (the processor's chat
template), exactly what inference uses. The train set is the five domains' train splits and
the context task's (``mmneuron_bench.synthetic.context``); the loss covers the answer's
tokens and ``</s>`` (weight 1) and, in the context task's prompts, the hint's words
(weight ``HINT_WEIGHT``: the model learns to expect the hint the image implies, so a
contradicting hint is surprising). At the end the script prints greedy accuracy on the
held-out eval splits (per condition for the context task) and writes the checkpoint
(safetensors + config + processor) and ``eval_accuracy.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

from mmneuron_bench.formats.atomic import atomic_write  # noqa: E402
from mmneuron_bench.plugins.registry import get_registry  # noqa: E402
from mmneuron_bench.synthetic.cache import load_split  # noqa: E402
from mmneuron_bench.synthetic.context import SPLIT_SIZES as CONTEXT_SPLIT_SIZES  # noqa: E402
from mmneuron_bench.synthetic.context import load_context_split  # noqa: E402
from mmneuron_bench.synthetic.generate import DOMAINS, SPLIT_SIZES, chance_level  # noqa: E402
from mmneuron_bench.synthetic.mini_model import (  # noqa: E402
    accuracy_by_domain,
    context_accuracy,
    mini_processor,
    new_mini_model,
)
from mmneuron_bench.testing.checkpoints import build_and_save  # noqa: E402

HINT_WEIGHT = 0.25


def encode_train_set(processor) -> dict[str, torch.Tensor]:
    """Every train sample as processor tensors, prompt + answer + ``</s>``, left-padded, with
    ``weights``: the loss weight of each token as a target (0 where it is not one)."""
    adapter = get_registry().adapter("llava_next")
    tokenizer = processor.tokenizer
    eos = tokenizer.eos_token
    images, prompts, answers, contexts = [], [], [], []
    for domain in DOMAINS:
        data = load_split(domain, "train")
        images += data["image"]
        prompts += data["question"]
        answers += data["answer"]
        contexts += [""] * len(data)
    context = load_context_split("train")
    images += context["image"]
    prompts += context["prompt"]
    answers += context["answer"]
    contexts += context["context"]
    texts = [
        f"{adapter.format_prompt(processor, q)} {a}{eos}"
        for q, a in zip(prompts, answers, strict=True)
    ]
    encoded = dict(processor(images=images, text=texts, padding=True, return_tensors="pt"))
    ids = encoded["input_ids"]
    assert (ids[:, -1] == tokenizer.eos_token_id).all()
    weights = torch.zeros(ids.shape, dtype=torch.float32)
    hint_id = tokenizer.convert_tokens_to_ids("hint")
    for row, (answer, hint) in enumerate(zip(answers, contexts, strict=True)):
        n_answer = len(tokenizer(answer, add_special_tokens=False).input_ids)
        weights[row, -(n_answer + 1) :] = 1.0  # the answer's tokens and </s>
        if hint:
            n_hint = len(tokenizer(hint, add_special_tokens=False).input_ids)
            start = int((ids[row] == hint_id).nonzero()[0]) + 2  # after "hint :"
            assert tokenizer.decode(ids[row, start : start + n_hint]) == hint
            weights[row, start : start + n_hint] = HINT_WEIGHT
    encoded["weights"] = weights
    return encoded


def lr_factor(step: int, steps: int) -> float:
    """Linear warm-up over the first 5 % of steps, then cosine decay to zero."""
    warmup = max(1, steps // 20)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train(model, data: dict[str, torch.Tensor], args: argparse.Namespace) -> None:
    """AdamW on the weighted cross-entropy of every target token (``data["weights"]``)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, args.steps))
    order = torch.Generator().manual_seed(args.seed)
    n = len(data["input_ids"])
    perm, cursor = torch.randperm(n, generator=order), 0
    adapter = get_registry().adapter("llava_next")
    model.train()
    start = time.perf_counter()
    for step in range(args.steps):
        if cursor + args.batch_size > n:
            perm, cursor = torch.randperm(n, generator=order), 0
        idx = perm[cursor : cursor + args.batch_size]
        cursor += args.batch_size
        batch = {key: value[idx] for key, value in data.items()}
        weights = batch.pop("weights")[:, 1:]
        logits = model(**adapter.forward_kwargs(batch)).logits[:, :-1]
        each = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            batch["input_ids"][:, 1:].reshape(-1),
            reduction="none",
        )
        loss = (each * weights.reshape(-1)).sum() / weights.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if (step + 1) % 100 == 0 or step + 1 == args.steps:
            elapsed = time.perf_counter() - start
            print(
                f"step {step + 1}/{args.steps}  loss {loss.item():.4f}  {elapsed:.0f} s", flush=True
            )
    model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="checkpoint folder to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads; results depend on it (default 1)"
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = False  # costs time, changes nothing
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    processor = mini_processor()
    data = encode_train_set(processor)
    print(f"encoded {len(data['input_ids'])} train samples, {time.perf_counter() - started:.0f} s")
    model = new_mini_model(args.seed)
    train(model, data, args)
    train_seconds = time.perf_counter() - started
    accuracy = accuracy_by_domain(model, processor, "eval")
    chance = {domain: chance_level(domain, "eval") for domain in DOMAINS}
    for domain in DOMAINS:
        print(f"{domain:10s} eval accuracy {accuracy[domain]:.4f}  chance {chance[domain]:.4f}")
    context = context_accuracy(model, processor, "eval")
    for condition, value in context.items():
        print(f"context {condition:14s} eval {value:.4f}")
    build_and_save(args.out, lambda: (model, processor))
    report = {
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "threads": args.threads,
        "train_seconds": round(train_seconds),
        "samples_per_domain": SPLIT_SIZES,
        "context_samples": CONTEXT_SPLIT_SIZES,
        "accuracy": accuracy,
        "chance": chance,
        "context": context,
    }
    text = json.dumps(report, indent=2) + "\n"
    atomic_write(args.out / "eval_accuracy.json", lambda tmp: tmp.write_text(text))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
