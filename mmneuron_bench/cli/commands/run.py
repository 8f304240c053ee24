"""``mmneuron-bench run``: lmms-eval tasks with domain-specific neurons switched off.

One run evaluates the tasks once, under one mask setting; ``--grid`` evaluates every task
under every module set (the paper's Table 1) with one loaded model, resuming where it stopped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from mmneuron_bench.cli.checks import (
    SEED,
    SEED_MAX,
    allow_other_model_option,
    check_folder_outputs,
    model_inputs,
    model_skeleton,
    task_inputs,
)
from mmneuron_bench.cli.options import (
    ModelChoice,
    OptionConflict,
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


def _check_options(
    ctx: click.Context, mask, stats, mode, grid, baseline, modules, seeds, seed
) -> None:
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
    if seed + seeds - 1 > SEED_MAX:
        raise OptionConflict(
            f"--seed {seed} with --random-seeds {seeds} needs seeds up to {seed + seeds - 1}, "
            f"beyond the largest seed {SEED_MAX}"
        )
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
@click.option("--seed", type=SEED, default=0, show_default=True)
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
@allow_other_model_option
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
    allow_other_model,
) -> None:
    """Evaluate lmms-eval tasks through the mmneuron model (neurons of --mask switched off).

    The tasks run through lmms-eval's own evaluator, prompts and metrics; decoding is greedy
    unless a task asks otherwise, and every seed is --seed, so a command gives the same
    numbers each time. Writes lmms-eval's results JSON, per-sample logs and provenance.
    """
    _check_options(ctx, mask, stats, mode, grid, baseline, modules, random_seeds, seed)
    plugin_args = _intervention_args(interventions)
    from mmneuron_bench.domains.tasks import load_tasks, task_manager
    from mmneuron_bench.formats.mask import NeuronMask
    from mmneuron_bench.formats.stats import ActivationStats
    from mmneuron_bench.lmms import workarounds
    from mmneuron_bench.lmms.devices import check_dispatchable
    from mmneuron_bench.lmms.evaluate import lmms_eval_logs_to_stderr
    from mmneuron_bench.lmms.grid import grid_tasks
    from mmneuron_bench.lmms.model import interventions_from_args, pick_base

    names = task_names(task_specs)
    _check_run_folder(output, grid)
    lmms_eval_logs_to_stderr()
    adapter, base_name = pick_base(model.pretrained, model.adapter_name, base)
    modules_given = "modules" in given_options(ctx, ("modules",))
    manager = task_manager(names, include_paths, base_name)
    # Tags and groups expanded; each task's data read and counted before the model loads.
    base_cls = workarounds.import_base(base_name)  # a chat base takes generation tasks only
    if model.device == "auto":
        check_dispatchable(base_name, base_cls)
    tasks = load_tasks(names, include_paths, manager)
    workarounds.check_chat_tasks(
        base_name, getattr(base_cls, "is_simple", True), list(tasks), manager
    )
    inputs = [mask, stats, edit, *(p for p in map(Path, plugin_args.values()) if p.is_file())]
    outputs = ["results.json", "provenance.json", "grid.json", "grid.csv"]
    check_folder_outputs(
        output,
        [*outputs, *(f"samples_{t}.jsonl" for t in tasks)],
        [*inputs, *model_inputs(model), *task_inputs(include_paths)],
    )
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
    if allow_other_model:
        settings["allow_other_model"] = model_args["allow_other_model"] = True
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
        neuron_mask = NeuronMask.load(mask)
        mean_stats = None if stats is None else ActivationStats.load(stats)
        columns = grid_tasks(tasks, neuron_mask, domain)  # each task's domains and metric
        task_domains = [column["domain"] for column in columns.values()]
        grid_files = (neuron_mask, mean_stats, task_domains, (f"--mask {mask}", f"--stats {stats}"))
        _check_models(model, built, grid_files, allow_other_model, settings)
        grid_args = (mask, neuron_mask, stats, mean_stats, columns, baseline, rows, random_seeds)
        _run_grid(manager, tasks, model_args, built, grid_args, settings, output, group)
        return
    modules, _ = choose_module_sets(modules, mask is not None, preset, adapter)
    settings["modules"] = modules[0]
    if mask is not None:
        given.update(mask=mask, modules=modules[0], domain=domain, mode=mode, stats=stats)
    built = interventions_from_args(given)
    mask_files = None
    if mask is not None:  # every task's domains found before the model loads
        masking = next(i for i in built if i.kind == "mask")
        task_domains = list(domain.resolve(tasks, masking.mask.domains).values())
        mask_files = (masking.mask, masking.stats, task_domains, None)
    _check_models(model, built, mask_files, allow_other_model, settings)
    _run_once(manager, names, model_args, built, (mask, stats), settings, output, group)


def _check_run_folder(output: Path, grid: bool) -> None:
    """A plain run and a grid do not share a folder: each would overwrite the other's
    provenance.json (and a grid could not resume)."""
    if not grid and (output / "grid.json").exists():
        raise MMNeuronError(
            f"{output} holds a grid (grid.json), whose provenance.json a plain run would "
            "overwrite; give another --output"
        )
    if grid and (output / "results.json").exists() and not (output / "grid.json").exists():
        raise MMNeuronError(
            f"{output} holds the results of a plain run (results.json), whose provenance.json "
            "a grid would overwrite; give another --output"
        )


def _check_models(model: ModelChoice, built, mask_files, allow: bool, settings: dict) -> None:
    """Check every file to be applied against the model's skeleton (no weights): refused when
    it does not fit or was made on another model, unless ``allow`` (then recorded in
    ``settings``). ``mask_files``: the mask, the stats, the tasks' domains (in mean mode each
    task's means are computed as the run will) and, for the grid's mask (no intervention
    holds it), the names of the two files."""
    from mmneuron_bench.interventions.mask import Deactivation, check_mask_model

    skeleton, components = model_skeleton(model)
    transfers = {}
    if mask_files is not None:
        mask, stats, task_domains, names = mask_files
        if names is not None:
            transfers.update(check_mask_model(skeleton, components, mask, stats, allow, names))
        for domains in dict.fromkeys(task_domains) if stats is not None else ():
            Deactivation(components, mask, domains.split("+"), "all", "mean", stats)
    for intervention in built:
        transfers.update(intervention.check_model(skeleton, components, allow))
    if transfers:
        settings["other_model"] = transfers


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
    """An earlier grid in ``output`` must have been run with the same settings and stats file
    (files compared by content, folders by where they resolve to, not by spelling)."""

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
        if _comparable(key, before.get(key)) != _comparable(key, now.get(key)):
            raise MMNeuronError(
                f"{output} holds a grid run with other settings ({key}: {before.get(key)!r}, "
                f"now {now.get(key)!r}); give another --output to start anew"
            )


def _comparable(key: str, value):
    """A setting as compared between runs: a file by its sha256, a path by where it
    resolves to."""
    if isinstance(value, dict) and "sha256" in value:
        return value["sha256"]
    if key == "include_paths" and isinstance(value, list):
        return [os.path.realpath(p) for p in value]
    if key == "interventions" and isinstance(value, dict):
        return {k: os.path.realpath(v) if os.path.exists(str(v)) else v for k, v in value.items()}
    return value


def _run_grid(manager, tasks, model_args, built, grid_args, settings, output: Path, group) -> None:
    from mmneuron_bench.formats.outputs import write_json
    from mmneuron_bench.lmms.evaluate import evaluate, provenance
    from mmneuron_bench.lmms.grid import (
        grid_header,
        grid_tables,
        load_cells,
        plan_cells,
        random_seeds,
        run_grid,
    )
    from mmneuron_bench.lmms.model import MMNeuronLMM

    mask, neuron_mask, stats, activation_stats, columns, baseline, module_sets, seeds = grid_args
    names = list(tasks)  # the grid's columns: tags and groups expanded to their tasks
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
        columns,
        module_sets,
        seeds,
        [e.kind for e in extras],
    )
    done = len(load_cells(output, header))
    group.wait()  # every process has read the folder before the main one writes to it
    new_folder = not output.exists()
    configs = {name: task.dump_config() for name, task in tasks.items()}
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
    try:
        if group.main:
            output.mkdir(parents=True, exist_ok=True)
            write_json(output / "provenance.json", provenance(lm, settings, mask, stats, configs))
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
    except BaseException:
        # No cell written: nothing to resume from.
        if group.main and not (output / "grid.json").exists():
            (output / "provenance.json").unlink(missing_ok=True)
            if new_folder and not any(output.iterdir()):
                output.rmdir()
        raise
    if not group.main:
        return
    for table in grid_tables(header, cells, settings["seed"]):
        print_table(table)
    for module_set, reason in settings.get("module_sets_left_out", {}).items():
        click.echo(f"module set {module_set!r} left out: {reason}", err=True)
    for name in ("grid.json", "grid.csv", "provenance.json"):
        click.echo(f"wrote {os.fspath(output / name)}")
