"""``mmneuron-bench report``: one HTML page and a markdown summary of a results folder."""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table


@click.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for report.html and report.md (default: FOLDER).",
)
def report(folder: Path, output: Path | None) -> None:
    """Gather the grid of `run --grid` and the `analyze` outputs found under FOLDER.

    Writes report.html (self-contained: tables, and figures embedded as data URIs) and
    report.md (figures linked by relative path).
    """
    from mmneuron_bench.analysis.files import output_dir
    from mmneuron_bench.report import build_report, write_report

    built = build_report(folder)
    paths = write_report(built, output_dir(output or folder))
    table = Table(title=f"report of {folder}")
    table.add_column("section")
    table.add_column("from")
    for section in built.sections:
        table.add_row(section.title, os.fspath(section.source))
    for missing in built.missing:
        table.add_row(f"[dim]not found: {missing}[/]", "-")
    Console().print(table)
    for path in paths:
        click.echo(f"wrote {os.fspath(path)}")
