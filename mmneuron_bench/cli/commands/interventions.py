"""``mmneuron-bench interventions``: the installed kinds of intervention and their arguments."""

from __future__ import annotations

import json

import click
from rich.console import Console

from mmneuron_bench.console import print_table
from mmneuron_bench.plugins.registry import get_registry
from mmneuron_bench.tables import Table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def interventions(as_json: bool) -> None:
    """List the installed intervention kinds: their model arguments (the first switches the
    kind on) for `run --intervention KEY=VALUE` and lmms-eval's `--model_args`."""
    registry = get_registry()
    for problem in registry.problems:
        Console(stderr=True).print(
            f"[yellow]warning:[/] plugin {problem.plugin!r}: {problem.message}", markup=True
        )
    entries = [
        {
            "name": name,
            "plugin": entry.plugin,
            "builtin": entry.builtin,
            "args": list(entry.kind.args),
            "help": entry.kind.help,
        }
        for name, entry in registry.interventions.items()
    ]
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    rows = [
        [e["name"], e["plugin"], "built-in" if e["builtin"] else "third-party",
         ", ".join(e["args"]), e["help"]]
        for e in entries
    ]  # fmt: skip
    header = ["kind", "plugin", "source", "model arguments", "what it does"]
    print_table(Table("Installed intervention kinds", header, rows))
