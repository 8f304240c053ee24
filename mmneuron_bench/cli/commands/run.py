"""``mmneuron-bench run``: lmms-eval tasks with domain-specific neurons switched off.

One run evaluates the tasks once, under one mask setting; ``--grid`` evaluates every task
under every module set (the paper's Table 1) with one loaded model, resuming where it stopped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from mmneuron_bench.cli.options import (
    ModelChoice,
    OptionConflict,
    check_output_folder,
    domain_choice_option,
    given_options,
    model_options,
    module_sets_option,
    preset_option,
    task_names,
    task_options,
)
from mmneuron_bench.console import print_table, progress
from mmneuron_bench.distributed import processes
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.formats.outputs import file_reference
from mmneuron_bench.interventions.targets import MODULE_SETS, choose_module_sets
from mmneuron_bench.tables import Table

MASK_OPTIONS = ("modules", "domain", "mode", "stats")


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def metrics_table(results: dict, described: dict, title: str) -> Table:
    """Every metric of every task as lmms-eval aggregated it, with the domains switched off."""
    from mmneuron_bench.lmms.evaluate import task_metrics

    domains = (described.get("mask") or {}).get("domains", {})
    counts = results.get("n-samples", {})
    rows = []
    for row in task_metrics(results):
        metric = row.metric if row.filter == "none" else f"{row.metric},{row.filter}"
        rows.append(
            [
                row.task,
                "+".join(domains.get(row.task, [])) or "-",
                metric,
                _format(row.value),
                _format(row.stderr),
                _format(counts.get(row.task, {}).get("effective")),
            ]
        )
    header = ["task", "domain", "metric", "value", "stderr", "n"]
    return Table(title, header, rows)


def _check_options(ctx: click.Context, mask, stats, mode, grid, baseline, modules, seeds) -> None:
    """Refuse combinations that make no sense, before anything is loaded."""
    given = given_options(ctx, MASK_OPTIONS)
    if grid:
        if mask is None:
            raise OptionConflict("--grid needs --mask (the neurons to switch off)")
    elif baseline is not None:
        raise OptionConflict("--baseline needs --grid")
    elif len(modules) > 1:
        raise OptionConflict("--modules takes one module set without --grid")
    if seeds > 1 and baseline is None:
        raise OptionConflict("--random-seeds needs --baseline random")
    if mask is None and given:
        raise OptionConflict(f"--{sorted(given)[0]} needs --mask")
    if mode == "mean" and stats is None:
        raise OptionConflict("--mode mean needs --stats (the recorded mean activations)")
    if mode == "zero" and stats is not None:
        raise OptionConflict("--stats needs --mode mean")


def _intervention_args(values: tuple[str, ...]) -> dict[str, str]:
    """``--intervention KEY=VALUE`` (repeatable) -> the model arguments of plugin kinds."""
    from mmneuron_bench.plugins.registry import get_registry

    known = get_registry().intervention_args()
    args: dict[str, str] = {}
    for value in values:
        key, sep, text = (part.strip() for part in value.partition("="))
        if not sep or not key:
            raise OptionConflict(f"--intervention {value!r} is not of the form KEY=VALUE")
        if key not in known:
            keys = ", ".join(sorted(known))
            raise OptionConflict(f"--intervention {key}=: no installed kind takes {key!r} ({keys})")
        if key in ("mask", "modules", "domain", "mode", "stats", "edit"):
            raise OptionConflict(f"--intervention {key}=: use --{key}")
        if key in args:
            raise OptionConflict(f"--intervention {key}= is given twice")
        args[key] = text
    return args


@click.command("run")
@model_options
@click.option("--base", help="lmms-eval model to wrap (default: the adapter's lmms-eval model).")
@click.option(
    "--mask",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Neuron mask (*.mask.safetensors); without it nothing is switched off.",
)
@module_sets_option("all", several=True)
@domain_choice_option
@click.option(
    "--mode",
    type=click.Choice(["zero", "mean"]),
    default="zero",
    show_default=True,
    help="Set the neurons to 0, or to their mean activation (needs --stats).",
)
@click.option(
    "--stats",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Stats file with the mean activations, for --mode mean.",
)
@click.option(
    "--edit",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Weight edit (neurons edit) applied around every task and removed after it.",
)
@click.option(
    "--intervention",
    "interventions",
    multiple=True,
    metavar="KEY=VALUE",
    help="An argument of an intervention kind from a plugin (repeatable; see `interventions`).",
)
@task_options()
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default="mmneuron-results",
    show_default=True,
    help="Folder for results.json, samples_TASK.jsonl, provenance.json (grid.json, grid.csv).",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--grid",
    is_flag=True,
    help="Every task with its domain's neurons off, per module set (default rows: "
    "none, vision, connector, llm, all; or --modules A,B,...).",
)
@click.option(
    "--baseline",
    type=click.Choice(["random"]),
    help="--grid: add rows with as many random neurons per domain, component and layer.",
)
@preset_option
@click.option(
    "--random-seeds",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="--baseline random: random masks of seeds --seed.. --seed+K-1, reported as mean ± sd.",
)
@click.pass_context
def run(
    ctx: click.Context,
    model: ModelChoice,
    base,
    mask,
    modules,
    domain,
    mode,
    stats,
    edit,
    interventions,
    task_specs,
    include_paths,
    limit,
    batch_size,
    output,
    seed,
    grid,
    baseline,
    preset,
    random_seeds,
) -> None:
    """Evaluate lmms-eval tasks through the mmneuron model (neurons of --mask switched off).

    The tasks run through lmms-eval's own evaluator, prompts and metrics; decoding is greedy
    unless a task asks otherwise, and every seed is --seed, so a command gives the same
    numbers each time. Writes lmms-eval's results JSON, per-sample logs and provenance.
    """
    _check_options(ctx, mask, stats, mode, grid, baseline, modules, random_seeds)
    plugin_args = _intervention_args(interventions)
    check_output_folder(output)
    from mmneuron_bench.domains.tasks import task_manager
    from mmneuron_bench.lmms import workarounds
    from mmneuron_bench.lmms.evaluate import lmms_eval_logs_to_stderr
    from mmneuron_bench.lmms.model import interventions_from_args, pick_base

    names = task_names(task_specs)
    lmms_eval_logs_to_stderr()
    adapter, base_name = pick_base(model.pretrained, model.adapter_name, base)
    modules_given = "modules" in given_options(ctx, ("modules",))
    manager = task_manager(names, include_paths, base_name)
    base_cls = workarounds.import_base(base_name)  # a chat base takes generation tasks only
    workarounds.check_chat_tasks(base_name, getattr(base_cls, "is_simple", True), names, manager)
    settings = {
        "tasks": names,
        "include_paths": [os.fspath(p) for p in include_paths],
        "limit": limit,
        "batch_size": batch_size,
        "device": model.device,
        "dtype": model.dtype,
        "seed": seed,
        "mode": mode,
        "domain": domain.text,
    }
    if preset != "default":
        settings["preset"] = preset
    group = processes()
    settings.update(_launch_settings(model, group))
    model_args = {
        "base": base_name,
        "adapter": model.adapter_name,
        "pretrained": model.pretrained,
        "device": group.device(model.device),
        "dtype": model.dtype,
        "batch_size": batch_size,
    }
    if model.max_memory is not None:
        model_args["max_memory"] = model.max_memory
    if model.offload_folder is not None:
        model_args["offload_folder"] = model.offload_folder
    given = dict(plugin_args)
    if edit is not None:
        given["edit"] = os.fspath(edit)
        settings["edit"] = file_reference(edit)
    if plugin_args:
        settings["interventions"] = plugin_args
    if grid:
        built = interventions_from_args(given)  # files checked before the model loads
        # Default rows naming a role the model has no neurons of are left out, with a note.
        rows, left_out = choose_module_sets(
            modules if modules_given else list(MODULE_SETS), modules_given, preset, adapter
        )
        if left_out:
            settings["module_sets_left_out"] = left_out
        if random_seeds > 1:
            settings["random_seeds"] = random_seeds
        grid_args = (mask, stats, domain, baseline, rows, random_seeds)
        _run_grid(manager, names, model_args, built, grid_args, settings, output, group)
        return
    modules, _ = choose_module_sets(modules, mask is not None, preset, adapter)
    settings["modules"] = modules[0]
    if mask is not None:
        given.update(mask=mask, modules=modules[0], domain=domain, mode=mode, stats=stats)
    built = interventions_from_args(given)
    _run_once(manager, names, model_args, built, (mask, stats), settings, output, group)


def _launch_settings(model: ModelChoice, group) -> dict:
    """The settings that say how the run was launched, where they differ from one process on
    one device: the number of processes, and ``--device auto``'s memory and offload folder.
    They change nothing in the results (a grid resumes whatever they are)."""
    settings: dict = {}
    if group.world > 1:
        settings["processes"] = group.world
    if model.max_memory is not None:
        settings["max_memory"] = {str(k): v for k, v in model.max_memory.items()}
    if model.offload_folder is not None:
        settings["offload_folder"] = model.offload_folder
    return settings


def _run_once(manager, names, model_args, built, files, settings, output: Path, group) -> None:
    from mmneuron_bench.lmms.evaluate import evaluate, provenance, write_run
    from mmneuron_bench.lmms.model import MMNeuronLMM

    lm = MMNeuronLMM(**model_args, interventions=built, split_requests=True)
    with progress("requests") as bars:
        bar = bars.add_task("evaluating", total=None)
        lm.on_progress = lambda done, total: bars.update(bar, completed=done, total=total)
        results = evaluate(
            lm, names, manager, settings["limit"], settings["seed"], settings["batch_size"]
        )
    if not group.main:  # every process has the results; the main one writes them
        return
    mask_path, stats_path = files
    record = provenance(lm, settings, mask_path, stats_path, results["configs"])
    written = write_run(output, results, record)
    title = f"{lm.base_name}: {model_args['pretrained']}"
    if mask_path is not None:
        title += f" | {mask_path} ({settings['modules']} off)"
    print_table(metrics_table(results, lm.describe(), title))
    for path in written:
        click.echo(f"wrote {os.fspath(path)}")


def _check_grid_settings(output: Path, settings: dict, stats: Path | None) -> None:
    """An earlier grid in ``output`` must have been run with the same settings and stats file."""

    path = output / "provenance.json"
    if not (output / "grid.json").exists() or not path.exists():
        return
    try:
        record = json.loads(path.read_text())
        before = {**record.get("settings", {}), "stats": record.get("stats")}
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise MMNeuronError(f"{path}: not a readable provenance file ({exc})") from None
    now = {**settings, "stats": None if stats is None else file_reference(stats)}
    launch = {"device", "batch_size", "processes", "max_memory", "offload_folder"}
    for key in sorted((set(before) | set(now)) - launch):
        if before.get(key) != now.get(key):
            raise MMNeuronError(
                f"{output} holds a grid run with other settings ({key}: {before.get(key)!r}, "
                f"now {now.get(key)!r}); give another --output to start anew"
            )


def _run_grid(manager, names, model_args, built, grid_args, settings, output: Path, group) -> None:
    from mmneuron_bench.formats.mask import NeuronMask
    from mmneuron_bench.formats.outputs import write_json
    from mmneuron_bench.formats.stats import ActivationStats
    from mmneuron_bench.lmms.evaluate import evaluate, provenance
    from mmneuron_bench.lmms.grid import (
        grid_header,
        grid_tables,
        grid_tasks,
        load_cells,
        plan_cells,
        random_seeds,
        run_grid,
    )
    from mmneuron_bench.lmms.model import MMNeuronLMM

    mask, stats, domain, baseline, module_sets, seeds = grid_args
    neuron_mask = NeuronMask.load(mask)
    activation_stats = None if stats is None else ActivationStats.load(stats)
    try:
        task_objects = manager.load_task_or_group(names)
    except Exception as exc:  # noqa: BLE001 - any dataset or YAML failure, said in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MMNeuronError(f"cannot load tasks {', '.join(names)}: {first}") from None
    tasks = grid_tasks({n: task_objects[n] for n in names}, neuron_mask, domain)
    _check_grid_settings(output, settings, stats)
    # Per-document interventions (FastMem) are rows of their own, not on in every cell.
    extras = [i for i in built if i.per_document]
    lm = MMNeuronLMM(
        **model_args,
        interventions=[i for i in built if not i.per_document],
        split_requests=True,
    )
    for extra in extras:
        lm.interventions.add(extra)  # checked against the model before any cell runs
        lm.interventions.remove(extra.kind)
    header = grid_header(
        lm.identity(),
        file_reference(mask),
        baseline,
        tasks,
        module_sets,
        seeds,
        [e.kind for e in extras],
    )
    done = len(load_cells(output, header))
    group.wait()  # every process has read the folder before the main one writes to it
    if group.main:
        output.mkdir(parents=True, exist_ok=True)
        configs = {name: task_objects[name].dump_config() for name in names}
        write_json(output / "provenance.json", provenance(lm, settings, mask, stats, configs))
    plan = plan_cells(
        module_sets,
        names,
        baseline,
        random_seeds(header, settings["seed"]),
        header.get("extra_rows", []),
    )
    total = len(plan)
    if done:
        click.echo(f"resuming: {done} of {total} cells already in {output / 'grid.json'}", err=True)
    with progress("cells") as bars:
        bar = bars.add_task("grid", total=total, completed=done)

        def advance(cell, _value: float) -> None:
            bars.update(bar, advance=1, description=f"{cell.module_set} {cell.task}")

        cells = run_grid(
            lm,
            neuron_mask,
            header,
            lambda task: evaluate(
                lm, [task], manager, settings["limit"], settings["seed"], settings["batch_size"]
            ),
            output,
            seed=settings["seed"],
            mode=settings["mode"],
            stats=activation_stats,
            on_cell=advance,
            extras=extras,
            processes=group,
        )
    if not group.main:
        return
    for table in grid_tables(header, cells, settings["seed"]):
        print_table(table)
    for module_set, reason in settings.get("module_sets_left_out", {}).items():
        click.echo(f"module set {module_set!r} left out: {reason}", err=True)
    for name in ("grid.json", "grid.csv", "provenance.json"):
        click.echo(f"wrote {os.fspath(output / name)}")
