"""``mmneuron-bench report``: one HTML page and a markdown summary of a results folder."""

from __future__ import annotations

import os
from pathlib import Path

import click

from mmneuron_bench.cli.checks import check_folder_outputs
from mmneuron_bench.cli.options import output_folder
from mmneuron_bench.console import print_table
from mmneuron_bench.formats.atomic import all_or_nothing
from mmneuron_bench.tables import Table


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
    from mmneuron_bench.analysis.report import Figure, build_report, write_report

    built = build_report(folder)
    out = output or folder
    inputs = [s.source for s in built.sections]
    inputs += [b.path for s in built.sections for b in s.blocks if isinstance(b, Figure)]
    check_folder_outputs(out, ["report.html", "report.md"], inputs)
    with all_or_nothing():
        paths = write_report(built, output_folder(out))
    rows = [[section.title, os.fspath(section.source)] for section in built.sections]
    rows += [[f"not found: {missing}", "-"] for missing in built.missing]
    print_table(Table(f"report of {folder}", ["section", "from"], rows))
    for path in paths:
        click.echo(f"wrote {os.fspath(path)}")
