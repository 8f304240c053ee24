"""Time DAPE selection on one component of 10 million neurons (1000 layers x 10000) x 5 domains.

Run: `python benchmarks/bench_dape.py [--layers L] [--width N] [--domains D] [--repeat R]`.
"""

from __future__ import annotations

import argparse
import time

import torch

from mmneuron_bench.selection.dape import select_dape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=5)
    parser.add_argument("--layers", type=int, default=1000)
    parser.add_argument("--width", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    p = torch.rand(args.domains, args.layers, args.width, generator=g, dtype=torch.float64)
    p[p < 0.2] = 0.0  # never-active entries, as in real statistics
    neurons = args.layers * args.width
    print(f"{neurons:,} neurons x {args.domains} domains, {torch.get_num_threads()} threads")
    for _ in range(args.repeat):
        start = time.perf_counter()
        chosen = select_dape(p)
        elapsed = time.perf_counter() - start
        print(f"select_dape: {elapsed:.2f} s, {int(chosen.any(0).sum()):,} neurons selected")


if __name__ == "__main__":
    main()
