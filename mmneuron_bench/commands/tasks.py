"""``mmneuron-bench tasks``: the lmms-eval tasks we ship and those in include paths."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from mmneuron_bench.task_index import TaskEntry, index_tasks, name_problems


def _tasks_table(entries: list[TaskEntry]) -> Table:
    table = Table(title="lmms-eval tasks")
    for column in ("task", "domain", "dataset", "metrics", "source", "folder"):
        table.add_column(column, overflow="fold")
    for e in entries:
        metrics = ", ".join(e.metrics) or "-"
        folder = str(e.yaml_path.parent)
        table.add_row(e.name, e.domain or "-", e.dataset, metrics, e.source, folder)
    return table


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
        Console().print(_tasks_table(entries))
