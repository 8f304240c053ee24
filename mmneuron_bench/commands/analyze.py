"""``mmneuron-bench analyze``: neuron distribution, hidden-state deviation and logit lens."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import click

from mmneuron_bench.analysis.files import output_dir
from mmneuron_bench.cli_options import (
    ModelChoice,
    check_output_folder,
    given_options,
    model_options,
    task_names,
)
from mmneuron_bench.console import progress
from mmneuron_bench.lmms.interventions import MODULE_SETS

DEFAULT_OUTPUT = Path("mmneuron-results") / "analysis"

_output_option = click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUTPUT,
    show_default=True,
    help="Folder for the output files.",
)


def _task_options(command: Callable) -> Callable:
    """Options shared by the analyses that run a model over lmms-eval tasks."""
    options = (
        click.option(
            "--tasks",
            "task_specs",
            multiple=True,
            required=True,
            help="lmms-eval task names (comma-separated or repeated).",
        ),
        click.option(
            "--include-path", "include_paths", multiple=True, help="Extra lmms-eval task folders."
        ),
        click.option(
            "--domain",
            "domain_specs",
            multiple=True,
            help="TASK=DOMAIN: the mask domain(s) of a task, '+'-joined (default: found from "
            "the task name or its metadata.domain, as run does).",
        ),
        click.option("--limit", type=click.IntRange(min=1), help="At most N documents per task."),
        _output_option,
    )
    for option in reversed(options):
        command = option(command)
    return command


@click.group()
def analyze() -> None:
    """Analyses of domain-specific neurons (distribution, deviation, logit lens)."""


@analyze.command("distribution")
@click.argument("mask", type=click.Path(dir_okay=False, path_type=Path))
@_output_option
def distribution(mask: Path, output: Path) -> None:
    """Domain-specific neurons of MASK per layer, component and domain (CSV, JSON, PNGs)."""
    from mmneuron_bench.analysis.distribution import write_distribution
    from mmneuron_bench.mask_file import NeuronMask

    paths = write_distribution(NeuronMask.load(mask), mask, output_dir(output))
    _print_tables(paths[1])
    _wrote(paths)


@analyze.command("deviation")
@model_options
@_task_options
@click.option("--mask", "mask_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--modules",
    default=",".join(MODULE_SETS),
    show_default=True,
    help="Comma-separated module sets whose domain neurons are switched off.",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Random masks of equal size (seeds 0..S-1) to compare with.",
)
def deviation(
    model: ModelChoice,
    task_specs,
    include_paths,
    domain_specs,
    limit,
    output,
    mask_path,
    modules,
    seeds,
) -> None:
    """How far each task's domain neurons move the last hidden states (the paper's Table 2).

    The deviation is 100 * mean over samples of ||H_masked - H||_2 / ||H||_2, H being the
    language model's final-norm output at every non-padding position of the prompt.
    """
    from mmneuron_bench.analysis.deviation import DEFINITION, measure_deviation, write_deviation
    from mmneuron_bench.analysis.files import file_reference
    from mmneuron_bench.loading import model_identity

    module_sets = _module_sets(modules)
    loaded, mask, tasks, domains = _prepare(
        model, task_specs, include_paths, domain_specs, mask_path, output
    )
    with _progress(tasks, domains, limit) as advance:
        rows = measure_deviation(
            loaded, tasks, domains, mask, module_sets, seeds, limit, on_sample=advance
        )
    header = {
        "model": model_identity(loaded, model.pretrained),
        "mask": file_reference(mask_path),
        "module_sets": module_sets,
        "seeds": seeds,
        "limit": limit,
    }
    paths = write_deviation(rows, header, output_dir(output))
    _print_tables(paths[0])
    click.echo(DEFINITION)
    _wrote(paths)


@analyze.command("logit-lens")
@model_options
@_task_options
@click.option(
    "--mask",
    "mask_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also measure with each task's domain neurons off.",
)
@click.option(
    "--modules",
    type=click.Choice(list(MODULE_SETS)),
    default="all",
    show_default=True,
    help="With --mask: the module set whose domain neurons are switched off.",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Positions whose full-vocabulary logits are computed at once (bounds memory).",
)
@click.pass_context
def logit_lens(
    ctx: click.Context,
    model: ModelChoice,
    task_specs,
    include_paths,
    domain_specs,
    limit,
    output,
    mask_path,
    modules,
    chunk_size,
) -> None:
    """Mean next-token entropy per decoder layer for image and text positions (Figure 5).

    The final norm and the LM head are applied to every decoder layer's output; the entropy
    (nats) of the softmax is averaged over image positions and over text positions.
    """
    from mmneuron_bench.analysis.files import file_reference
    from mmneuron_bench.analysis.logit_lens import DEFINITION, measure_logit_lens, write_logit_lens
    from mmneuron_bench.loading import model_identity

    if mask_path is None:
        given = given_options(ctx, ("domain_specs", "modules"))
        for option, name in (("--domain", "domain_specs"), ("--modules", "modules")):
            if name in given:
                raise click.UsageError(f"{option} needs --mask")
    loaded, mask, tasks, domains = _prepare(
        model, task_specs, include_paths, domain_specs, mask_path, output
    )
    with _progress(tasks, domains, limit) as advance:
        results = measure_logit_lens(
            loaded, tasks, domains, mask, modules, limit, chunk_size, on_sample=advance
        )
    header = {
        "model": model_identity(loaded, model.pretrained),
        "mask": None if mask_path is None else file_reference(mask_path),
        "module_set": None if mask_path is None else modules,
        "chunk_size": chunk_size,
        "limit": limit,
    }
    paths = write_logit_lens(results, header, output_dir(output))
    _print_tables(paths[0])
    click.echo(DEFINITION)
    _wrote(paths)


def _prepare(model: ModelChoice, task_specs, include_paths, domain_specs, mask_path, output):
    """Check the mask, the tasks' domains and the output folder (cheap), then load the model."""
    from mmneuron_bench.analysis.tasks import parse_task_domains, resolve_task_domains
    from mmneuron_bench.domains import load_tasks
    from mmneuron_bench.mask_file import NeuronMask

    names = task_names(task_specs)
    explicit = parse_task_domains(domain_specs)
    mask = None if mask_path is None else NeuronMask.load(mask_path)
    tasks = load_tasks(names, list(include_paths))
    if mask is None:
        domains = dict.fromkeys(names)
    else:
        domains = resolve_task_domains(tasks, mask.domains, explicit)
    check_output_folder(output)
    return model.load(), mask, tasks, domains


@contextmanager
def _progress(tasks, domains: dict, limit: int | None):
    """A progress bar over every sample of every task, on stderr; yields its advance()."""
    from mmneuron_bench.analysis.tasks import count_samples

    with progress() as bars:
        bar = bars.add_task("analysing", total=count_samples(tasks, list(domains), limit))

        def advance(task: str) -> None:
            bars.update(bar, advance=1, description=task)

        yield advance


def _module_sets(value: str) -> list[str]:
    sets = list(dict.fromkeys(s.strip() for s in value.split(",") if s.strip()))
    unknown = [s for s in sets if s not in MODULE_SETS]
    if unknown or not sets:
        raise click.BadParameter(
            f"{unknown[0] if unknown else value!r} is not a module set; "
            f"choose from {', '.join(MODULE_SETS)}",
            param_hint="--modules",
        )
    return sets


def _print_tables(path: Path) -> None:
    """The tables of a written output, as the report shows them."""
    from mmneuron_bench.console import print_table
    from mmneuron_bench.report import file_section
    from mmneuron_bench.tables import Table

    for block in file_section(path).blocks:
        if isinstance(block, Table):
            print_table(block)


def _wrote(paths: list[Path]) -> None:
    for path in paths:
        click.echo(f"wrote {os.fspath(path)}")
