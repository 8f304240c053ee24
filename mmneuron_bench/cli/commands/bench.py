"""``mmneuron-bench bench``: what recording and masking cost on top of a plain prefill."""

from __future__ import annotations

import json

import click
from rich.console import Console

from mmneuron_bench.cli.options import ModelChoice, model_options
from mmneuron_bench.console import print_table
from mmneuron_bench.tables import Table


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


@click.command()
@model_options
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench(model: ModelChoice, batch_size, repeats, as_json) -> None:
    """Time plain prefill, prefill while recording, and prefill with a random 1 % mask."""
    from mmneuron_bench.bench import PHASES, run_bench

    result = run_bench(model.load(), batch_size=batch_size, repeats=repeats)
    if as_json:
        figures = {
            "seconds": result.seconds,
            "times": result.times,
            "ratios": {p: result.ratio(p) for p in PHASES},
            "peak_cuda_bytes": result.peak_bytes,
            "recorder_bytes": result.recorder_bytes,
            "max_rss_bytes": result.max_rss_bytes,
            "masked_neurons": result.masked_neurons,
            "tokens": result.tokens,
        }
        click.echo(json.dumps(figures, indent=2))
        return
    rows = [
        [
            phase,
            f"{result.seconds[phase] * 1000:.1f}",
            f"{min(result.times[phase]) * 1000:.0f}-{max(result.times[phase]) * 1000:.0f}",
            f"{result.ratio(phase):.3f}",
            _mb(result.peak_bytes[phase]),
        ]
        for phase in PHASES
    ]
    header = ["phase", "ms", "fastest-slowest ms", "ratio to plain", "peak CUDA MB"]
    title = f"prefill, batch {batch_size}, {result.tokens} tokens, median of {repeats}"
    console = Console()
    print_table(Table(title, header, rows), console)
    console.print(
        f"recorder counters: {_mb(result.recorder_bytes)} MB (fixed size: samples do not add to "
        f"it); process peak RSS {_mb(result.max_rss_bytes)} MB; "
        f"{result.masked_neurons} neurons masked"
    )
    console.print(
        "ratio to plain: median over repeats of the phase's time over that repeat's plain time"
    )
