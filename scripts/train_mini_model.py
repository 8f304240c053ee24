"""Train the miniature LLaVA-NeXT on the synthetic train splits, from its seed, on the CPU.

    python scripts/train_mini_model.py --out mmneuron_bench/assets/mini_llava_next

The run is deterministic (seeded init and data order, deterministic kernels, fixed thread
count): the same seed, steps and thread count give the same weights on the same machine.
Prompts are built by the llava_next adapter's ``format_prompt`` (the processor's chat
template), exactly what inference uses; the loss covers the answer token and ``</s>``.
At the end the script prints greedy accuracy on the held-out eval splits and writes the
checkpoint (safetensors + config + processor) and ``eval_accuracy.json`` into ``--out``.
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
from mmneuron_bench.synthetic.generate import DOMAINS, SPLIT_SIZES, chance_level  # noqa: E402
from mmneuron_bench.synthetic.mini_model import (  # noqa: E402
    accuracy_by_domain,
    mini_processor,
    new_mini_model,
)
from mmneuron_bench.testing.checkpoints import build_and_save  # noqa: E402


def encode_train_set(processor) -> dict[str, torch.Tensor]:
    """Every train sample as processor tensors, prompt + answer + ``</s>``, left-padded."""
    adapter = get_registry().adapter("llava_next")
    eos = processor.tokenizer.eos_token
    images, texts = [], []
    for domain in DOMAINS:
        data = load_split(domain, "train")
        images += data["image"]
        texts += [
            f"{adapter.format_prompt(processor, q)} {a}{eos}"
            for q, a in zip(data["question"], data["answer"], strict=True)
        ]
    encoded = processor(images=images, text=texts, padding=True, return_tensors="pt")
    assert (encoded["input_ids"][:, -1] == processor.tokenizer.eos_token_id).all()
    return dict(encoded)


def lr_factor(step: int, steps: int) -> float:
    """Linear warm-up over the first 5 % of steps, then cosine decay to zero."""
    warmup = max(1, steps // 20)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train(model, data: dict[str, torch.Tensor], args: argparse.Namespace) -> None:
    """AdamW on the cross-entropy of the answer token and ``</s>`` (the last two tokens)."""
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
        # logits_to_keep=3: the logits at positions -3 and -2 predict the answer and </s>.
        logits = model(**adapter.forward_kwargs(batch), logits_to_keep=3).logits[:, :2]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch["input_ids"][:, -2:].reshape(-1)
        )
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
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads; results depend on it (default 2)"
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
    build_and_save(args.out, lambda: (model, processor))
    report = {
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "threads": args.threads,
        "train_seconds": round(train_seconds),
        "samples_per_domain": SPLIT_SIZES,
        "accuracy": accuracy,
        "chance": chance,
    }
    text = json.dumps(report, indent=2) + "\n"
    atomic_write(args.out / "eval_accuracy.json", lambda tmp: tmp.write_text(text))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
