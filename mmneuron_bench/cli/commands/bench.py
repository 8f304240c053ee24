"""``mmneuron-bench bench``: what recording and masking cost on top of a plain prefill, and
(``--fastmem``) what FastMem costs per document on top of a plain answer."""

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
@click.option(
    "--fastmem",
    is_flag=True,
    help="Also time one document answered with FastMem (and + CD) against a plain answer.",
)
@click.option("--fastmem-steps", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--new-tokens",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="--fastmem: tokens generated per answer.",
)
def bench(
    model: ModelChoice, batch_size, repeats, as_json, fastmem, fastmem_steps, new_tokens
) -> None:
    """Time plain prefill, prefill while recording, and prefill with a random 1 % mask."""
    from mmneuron_bench.bench import PHASES, run_bench, run_fastmem_bench

    loaded = model.load()
    result = run_bench(loaded, batch_size=batch_size, repeats=repeats)
    memorised = None
    if fastmem:
        memorised = run_fastmem_bench(
            loaded, repeats=repeats, steps=fastmem_steps, new_tokens=new_tokens
        )
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
        if memorised is not None:
            figures["fastmem"] = _fastmem_figures(memorised)
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
    if memorised is not None:
        _print_fastmem(memorised, fastmem_steps, console)


def _fastmem_figures(result) -> dict:
    from mmneuron_bench.bench import FASTMEM_PHASES

    return {
        "seconds_per_document": result.seconds,
        "times": result.times,
        "ratios": {p: result.ratio(p) for p in FASTMEM_PHASES},
        "peak_cuda_bytes": result.peak_bytes,
        "memory_ratios": {p: result.memory_ratio(p) for p in FASTMEM_PHASES},
        "state_bytes": result.state_bytes,
        "parameter_bytes": result.parameter_bytes,
        "labelled_tokens": result.labelled_tokens,
        "new_tokens": result.new_tokens,
    }


def _print_fastmem(result, steps: int, console: Console) -> None:
    from mmneuron_bench.bench import FASTMEM_PHASES

    rows = []
    for phase in FASTMEM_PHASES:
        memory = result.memory_ratio(phase)
        rows.append(
            [
                phase,
                f"{result.seconds[phase] * 1000:.1f}",
                f"{result.ratio(phase):.2f}",
                _mb(result.peak_bytes[phase]),
                "-" if memory is None else f"{memory:.3f}",
            ]
        )
    header = ["answer", "ms per document", "ratio to plain", "peak CUDA MB", "memory ratio"]
    title = (
        f"one document, {result.new_tokens} new tokens; FastMem {steps} steps on "
        f"{result.labelled_tokens} tokens"
    )
    print_table(Table(title, header, rows), console)
    console.print(
        f"FastMem's own tensors (fp32 copies of the last MLP, gradients, Adam moments, cached "
        f"layer input, reference distribution): {_mb(result.state_bytes)} MB = "
        f"{result.state_bytes / result.parameter_bytes:.3f} x the model's weights "
        f"({_mb(result.parameter_bytes)} MB)"
    )
