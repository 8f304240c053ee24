"""``mmneuron-bench tasks``: the lmms-eval tasks we ship and those in include paths."""

from __future__ import annotations

import json

import click
from rich.console import Console

from mmneuron_bench.console import print_table
from mmneuron_bench.domains.index import TaskEntry, index_tasks, name_problems
from mmneuron_bench.tables import Table


def _tasks_table(entries: list[TaskEntry]) -> Table:
    rows = [
        [
            e.name,
            e.domain or "-",
            e.dataset,
            ", ".join(e.metrics) or "-",
            e.source,
            str(e.yaml_path.parent),
        ]
        for e in entries
    ]
    header = ["task", "domain", "dataset", "metrics", "source", "folder"]
    return Table("lmms-eval tasks", header, rows)


@click.command("tasks")
@click.option(
    "--include-path",
    "include_paths",
    multiple=True,
    metavar="DIR",
    help="A folder of task folders of your own (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def tasks(include_paths: tuple[str, ...], as_json: bool) -> None:
    """List the shipped domain tasks and the tasks found in --include-path folders."""
    entries = index_tasks(include_paths)
    err = Console(stderr=True)
    for problem in name_problems(entries):
        err.print(f"[yellow]warning:[/] {problem}", markup=True, highlight=False)
    if as_json:
        click.echo(json.dumps([e.to_json() for e in entries], indent=2))
    else:
        print_table(_tasks_table(entries))
