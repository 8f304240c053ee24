"""``mmneuron-bench select``: a neuron mask from statistics (DAPE), or a random control."""

from __future__ import annotations

import os
from pathlib import Path

import click

from mmneuron_bench.analysis.distribution import (
    component_summary,
    neuron_distribution,
    selection_table,
)
from mmneuron_bench.cli.checks import SEED, check_outputs
from mmneuron_bench.cli.options import (
    FiniteFloatRange,
    OptionConflict,
    given_options,
    out_file_option,
)
from mmneuron_bench.console import print_table
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.formats.common import sha256_file
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.formats.stats import ActivationStats
from mmneuron_bench.selection.dape import dape_mask
from mmneuron_bench.selection.random import select_random_like

DAPE_OPTIONS = ("top_rate", "filter_rate", "bar_ratio")


@click.command()
@click.argument("stats", required=False, type=click.Path(dir_okay=False, path_type=Path))
@out_file_option("Mask file to write (*.mask.safetensors).")
@click.option(
    "--method",
    type=click.Choice(["dape", "random"]),
    default="dape",
    show_default=True,
    help="dape: select from STATS; random: a control mask like --like.",
)
@click.option(
    "--top-rate",
    type=FiniteFloatRange(0, 1),
    default=0.01,
    show_default=True,
    help="DAPE: fraction of each component's neurons to select.",
)
@click.option(
    "--filter-rate",
    type=FiniteFloatRange(0, 1),
    default=0.95,
    show_default=True,
    help="DAPE: quantile of p a neuron must exceed in some domain to be eligible.",
)
@click.option(
    "--bar-ratio",
    type=FiniteFloatRange(0, 1),
    default=0.95,
    show_default=True,
    help="DAPE: quantile of p above which a selected neuron belongs to a domain.",
)
@click.option(
    "--like",
    type=click.Path(dir_okay=False, path_type=Path),
    help="random: the mask whose counts per domain, component and layer to reproduce.",
)
@click.option(
    "--seed",
    type=SEED,
    default=0,
    show_default=True,
    help="random: seed of the random choice.",
)
@click.option(
    "--skip-unused",
    is_flag=True,
    help="Leave out neurons of layers the model never reads (LLaVA's last vision layer); "
    "the paper keeps them.",
)
@click.pass_context
def select(
    ctx: click.Context,
    stats: Path | None,
    out: Path,
    method: str,
    top_rate: float,
    filter_rate: float,
    bar_ratio: float,
    like: Path | None,
    seed: int,
    skip_unused: bool,
) -> None:
    """Write a neuron mask: DAPE on the statistics file STATS, or a random control.

    With --method dape (the default), STATS is required and the domain-specific neurons are
    selected as in DESIGN.md "DAPE selection, exactly". With --method random --like MASK, STATS
    is not given: the new mask has, for every domain, component and layer, as many neurons as
    MASK, chosen uniformly with --seed (the paper's random baseline).
    """
    given = given_options(ctx, (*DAPE_OPTIONS, "seed"))
    _check_options(method, stats, like, given)
    check_outputs([out], [stats, like])
    if method == "dape":
        loaded = ActivationStats.load(stats)
        mask = dape_mask(loaded, top_rate, filter_rate, bar_ratio, source=sha256_file(stats))
        title = f"DAPE: {stats}"
    else:
        mask = select_random_like(NeuronMask.load(like), seed)
        title = f"random like {like}, seed {seed}"
    if skip_unused:
        if mask.unused is None:
            raise MMNeuronError(
                f"{stats or like} does not say which layers are unused (recorded before 0.2); "
                "record again to use --skip-unused"
            )
        mask = mask.without_unused()
        title += ", unused layers left out"
    mask.save(out)
    summary = component_summary(neuron_distribution(mask), mask.unused)
    print_table(selection_table(title, mask.domains, summary))
    click.echo(f"wrote {os.fspath(out)}")


def _check_options(method: str, stats: Path | None, like: Path | None, given: set[str]) -> None:
    """Refuse combinations that make no sense; `given` are the options set explicitly."""
    if method == "dape":
        if like is not None:
            raise OptionConflict("--like needs --method random")
        if "seed" in given:
            raise OptionConflict("--seed needs --method random (DAPE is deterministic)")
        if stats is None:
            raise OptionConflict("--method dape needs a STATS file")
    else:
        if like is None:
            raise OptionConflict("--method random needs --like MASK")
        if stats is not None:
            raise OptionConflict("--method random takes no STATS file (--like MASK gives counts)")
        rates = sorted(given & set(DAPE_OPTIONS))
        if rates:
            option = "--" + rates[0].replace("_", "-")
            raise OptionConflict(f"{option} applies to --method dape only")
