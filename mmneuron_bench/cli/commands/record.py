"""``mmneuron-bench record``: activation statistics of a model over domains of lmms-eval tasks."""

from __future__ import annotations

import click

from mmneuron_bench.cli.checks import check_outputs, model_inputs, task_inputs
from mmneuron_bench.cli.options import (
    ModelChoice,
    domain_definitions,
    model_options,
    out_file_option,
    preset_option,
)
from mmneuron_bench.console import print_table, progress
from mmneuron_bench.distributed import processes
from mmneuron_bench.formats.stats import merge, summary_table


def _check_token_scope(model: ModelChoice, token_scope: str) -> None:
    """Refuse, from the config alone, a token scope the model's family cannot count."""
    from mmneuron_bench.models.loading import load_config, pick_adapter
    from mmneuron_bench.plugins.registry import get_registry

    config = load_config(model.pretrained)
    pick_adapter(get_registry(), config, model.adapter_name).check_token_scope(token_scope)


@click.command()
@model_options
@click.option(
    "--domain",
    "domain_specs",
    multiple=True,
    required=True,
    help="NAME=TASK[,TASK...]: a domain and its lmms-eval tasks (repeat per domain).",
)
@click.option(
    "--include-path", "include_paths", multiple=True, help="Extra lmms-eval task folders."
)
@click.option("--limit", type=click.IntRange(min=1), help="At most N documents per task.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--token-scope",
    type=click.Choice(["all", "image", "text"]),
    default="all",
    show_default=True,
    help="Language-model positions counted.",
)
@out_file_option("Output FILE.stats.safetensors.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its checkpoint.")
@preset_option
def record(
    model: ModelChoice,
    domain_specs,
    include_paths,
    limit,
    batch_size,
    token_scope,
    out,
    resume,
    preset,
) -> None:
    """Count, per neuron and domain, the tokens on which its activation is > 0.

    The prompt is the one lmms-eval's model for the family uses (chat template, the task's own
    pre- and post-prompt); --preset paper records the papers' bare '<image>\\n{question}'.
    A task may be an lmms-eval tag or group: its tasks are recorded.
    """
    from mmneuron_bench.recording.run import (
        Recording,
        RecordPlan,
        Shard,
        checkpoint_path,
        plan_samples,
    )

    prompt = "paper" if preset == "paper" else "default"
    plan = RecordPlan(
        model.pretrained,
        domain_definitions(domain_specs),
        list(include_paths),
        limit,
        token_scope,
        prompt,
    )
    check_outputs([out], [*model_inputs(model), *task_inputs(include_paths)])
    _check_token_scope(model, token_scope)
    group = processes()
    shard = Shard(group.rank, group.world)
    planned = plan_samples(plan, shard)  # task names and data, before the model loads
    loaded = model.load(group)
    recording = Recording(loaded, plan, shard, planned)
    total = sum(len(s) for s in recording.samples.values())
    with progress() as bars:
        bar = bars.add_task("recording", total=total)

        def advance(domain: str, n: int) -> None:
            bars.update(bar, advance=n, description=domain)

        stats = recording.run(out, batch_size=batch_size, resume=resume, on_batch=advance)
    if group.world > 1:  # every process recorded a disjoint share
        stats = merge(group.all_gather(stats))
    if group.main:
        stats.save(out)
        print_table(summary_table(stats, "recorded"))
        click.echo(f"wrote {out}")
    group.wait()
    checkpoint_path(out, plan.digest(recording.model_meta), shard).unlink(missing_ok=True)
