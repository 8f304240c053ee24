"""``mmneuron-bench analyze``: neuron distribution, hidden-state deviation and logit lens."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from mmneuron_bench.cli.checks import (
    SEED_MAX,
    allow_other_model_option,
    check_folder_outputs,
    model_inputs,
    model_skeleton,
    task_inputs,
)
from mmneuron_bench.cli.options import (
    ModelChoice,
    domain_choice_option,
    given_options,
    model_options,
    module_sets_option,
    output_folder,
    preset_option,
    task_names,
    task_options,
)
from mmneuron_bench.console import progress
from mmneuron_bench.distributed import processes
from mmneuron_bench.formats.atomic import all_or_nothing
from mmneuron_bench.interventions.targets import MODULE_SETS, choose_module_sets

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
        task_options(),
        domain_choice_option,
        preset_option,
        _output_option,
        allow_other_model_option,
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
    from mmneuron_bench.formats.mask import NeuronMask

    neuron_mask = NeuronMask.load(mask)
    pngs = [f"distribution_{c}.png" for c in neuron_mask.components]
    check_folder_outputs(output, ["distribution.csv", "distribution.json", *pngs], [mask])
    with all_or_nothing():
        paths = write_distribution(neuron_mask, mask, output_folder(output))
    _print_tables(paths[1])
    _wrote(paths)


@analyze.command("deviation")
@model_options
@_task_options
@click.option("--mask", "mask_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@module_sets_option(",".join(MODULE_SETS), several=True)
@click.option(
    "--seeds",
    type=click.IntRange(1, SEED_MAX + 1),
    default=3,
    show_default=True,
    help="Random masks of equal size (seeds 0..S-1) to compare with.",
)
@click.pass_context
def deviation(
    ctx: click.Context,
    model: ModelChoice,
    task_specs,
    include_paths,
    limit,
    domain,
    preset,
    output,
    mask_path,
    modules,
    seeds,
    allow_other_model,
) -> None:
    """How far each task's domain neurons move the last hidden states (the paper's Table 2).

    The deviation is 100 * mean over samples of ||H_masked - H||_2 / ||H||_2, H being the
    language model's final-norm output at every non-padding position of the prompt.
    """
    from mmneuron_bench.analysis.deviation import DEFINITION, measure_deviation, write_deviation
    from mmneuron_bench.formats.outputs import file_reference

    modules, left_out = choose_module_sets(
        modules, "modules" in given_options(ctx, ("modules",)), preset, model.adapter()
    )
    inputs = _Inputs(model, task_specs, include_paths, domain, mask_path, output, limit)
    done = _measure(
        inputs,
        ["deviation.json", "deviation.csv"],
        allow_other_model,
        lambda loaded, tasks, domains, mask, advance, group: measure_deviation(
            loaded, tasks, domains, mask, modules, seeds, limit, advance, group
        ),
    )
    if done is None:  # another process than the main one: the main one writes
        return
    header = {"mask": file_reference(mask_path), "module_sets": modules, "seeds": seeds}
    if left_out:
        header["module_sets_left_out"] = left_out
    _write(inputs, done, header, write_deviation, DEFINITION)
    _left_out_notes(left_out)


@analyze.command("logit-lens")
@model_options
@_task_options
@click.option(
    "--mask",
    "mask_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also measure with each task's domain neurons off.",
)
@module_sets_option("all", several=False)
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
    limit,
    domain,
    preset,
    output,
    mask_path,
    modules,
    chunk_size,
    allow_other_model,
) -> None:
    """Mean next-token entropy per decoder layer for image and text positions (Figure 5).

    The final norm and the LM head are applied to every decoder layer's output; the entropy
    (nats) of the softmax is averaged over image positions and over text positions.
    """
    from mmneuron_bench.analysis.logit_lens import DEFINITION, measure_logit_lens, write_logit_lens
    from mmneuron_bench.formats.outputs import file_reference

    if mask_path is None:
        given = given_options(ctx, ("domain", "modules"))
        for option in sorted(given):
            raise click.UsageError(f"--{option} needs --mask")
    else:
        modules, _ = choose_module_sets(modules, True, preset, model.adapter())
    inputs = _Inputs(model, task_specs, include_paths, domain, mask_path, output, limit)
    done = _measure(
        inputs,
        ["logit_lens.json", "logit_lens.csv", "logit_lens.png"],
        allow_other_model,
        lambda loaded, tasks, domains, mask, advance, group: measure_logit_lens(
            loaded, tasks, domains, mask, modules[0], limit, chunk_size, advance, group
        ),
    )
    if done is None:  # another process than the main one: the main one writes
        return
    header = {
        "mask": None if mask_path is None else file_reference(mask_path),
        "module_set": None if mask_path is None else modules[0],
        "chunk_size": chunk_size,
    }
    _write(inputs, done, header, write_logit_lens, DEFINITION)


def _left_out_notes(left_out: dict[str, str]) -> None:
    for module_set, reason in left_out.items():
        click.echo(f"module set {module_set!r} left out: {reason}", err=True)


@dataclass(frozen=True)
class _Inputs:
    """What an analysis measures: the model, its tasks (and their domains) and the mask."""

    model: ModelChoice
    task_specs: tuple
    include_paths: tuple
    domain: Any
    mask_path: Path | None
    output: Path
    limit: int | None


def _measure(inputs: _Inputs, outputs: list[str], allow: bool, measure: Callable):
    """Check the mask (its model too), the tasks and their domains, and the output files
    (cheap), then load the model (on this process's device) and ``measure(loaded, tasks,
    domains, mask, advance, group)`` with a progress bar. Tags and groups stand for their
    tasks. Returns ``(loaded, files made on another model, result)`` on the main process,
    None on the others."""
    from mmneuron_bench.domains.tasks import load_tasks
    from mmneuron_bench.formats.mask import NeuronMask
    from mmneuron_bench.interventions.mask import check_mask_model

    model, mask_path = inputs.model, inputs.mask_path
    mask = None if mask_path is None else NeuronMask.load(mask_path)
    if mask is not None:
        inputs.domain.check(mask.domains)
    tasks = load_tasks(task_names(inputs.task_specs), list(inputs.include_paths))
    domains = dict.fromkeys(tasks) if mask is None else inputs.domain.resolve(tasks, mask.domains)
    files = [mask_path, *model_inputs(model), *task_inputs(inputs.include_paths)]
    check_folder_outputs(inputs.output, outputs, files)
    transfers = {}
    if mask is not None:
        skeleton, components = model_skeleton(model)
        what = (f"--mask {mask_path}", "")
        transfers = check_mask_model(skeleton, components, mask, None, allow, what)
    group = processes()
    loaded = model.load(group)
    with _progress(tasks, domains, inputs.limit, group) as advance:
        result = measure(loaded, tasks, domains, mask, advance, group)
    return (loaded, transfers, result) if group.main else None


def _write(inputs: _Inputs, done: tuple, header: dict, write: Callable, definition: str) -> None:
    """Write an analysis' files together (``write(result, header, folder)``), print its
    tables and definition, and say what was written."""
    from mmneuron_bench.models.loading import model_identity

    loaded, transfers, result = done
    header = {
        "model": model_identity(loaded, inputs.model.pretrained),
        **header,
        "limit": inputs.limit,
    }
    if transfers:
        header["other_model"] = transfers
    with all_or_nothing():
        paths = write(result, header, output_folder(inputs.output))
    _print_tables(paths[0])
    click.echo(definition)
    _wrote(paths)


@contextmanager
def _progress(tasks, domains: dict, limit: int | None, group):
    """A progress bar over the samples of every task this process measures, on stderr;
    yields its advance()."""
    from mmneuron_bench.analysis.inputs import count_samples

    with progress() as bars:
        total = sum(len(group.take(range(count_samples(tasks, [name], limit)))) for name in domains)
        bar = bars.add_task("analysing", total=total)

        def advance(task: str) -> None:
            bars.update(bar, advance=1, description=task)

        yield advance


def _print_tables(path: Path) -> None:
    """The tables of a written output, as the report shows them."""
    from mmneuron_bench.analysis.report import file_section
    from mmneuron_bench.console import print_table
    from mmneuron_bench.tables import Table

    for block in file_section(path).blocks:
        if isinstance(block, Table):
            print_table(block)


def _wrote(paths: list[Path]) -> None:
    for path in paths:
        click.echo(f"wrote {os.fspath(path)}")
