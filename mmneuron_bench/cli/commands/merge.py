"""``mmneuron-bench merge``: sum statistics files recorded over disjoint samples."""

from __future__ import annotations

import os
from pathlib import Path

import click

from mmneuron_bench.cli.checks import check_outputs
from mmneuron_bench.cli.options import out_file_option
from mmneuron_bench.console import print_table
from mmneuron_bench.errors import MaskMismatchError, MMNeuronError
from mmneuron_bench.formats import stats as stats_file
from mmneuron_bench.formats.common import sha256_file
from mmneuron_bench.formats.documents import overlap
from mmneuron_bench.formats.stats import ActivationStats, summary_table


def merge_files(paths: list[Path]) -> ActivationStats:
    """Load and sum `paths`; a mismatch names the file and the first field that differs, and
    documents counted in two files name both files, the domain, the task and the count."""
    digests: dict[str, Path] = {}
    loaded: list[tuple[Path, ActivationStats]] = []
    merged = None
    for path in paths:
        stats = ActivationStats.load(path)
        seen = digests.setdefault(sha256_file(path), path)
        if seen is not path:
            what = "is given twice" if seen.resolve() == path.resolve() else f"duplicates {seen}"
            raise MMNeuronError(f"{path} {what}: merging would count its samples twice")
        for earlier, before in loaded:
            both = (
                before.documents and stats.documents and overlap(before.documents, stats.documents)
            )
            if both:
                raise MMNeuronError(
                    f"cannot merge {path} into {paths[0]}: {both} counted in {earlier} too"
                )
        loaded.append((path, stats))
        if merged is None:
            merged = stats
            continue
        try:
            merged = stats_file.merge([merged, stats])
        except MaskMismatchError as e:
            problem = str(e).removeprefix("cannot merge stats 2 into stats 1: ")
            raise MaskMismatchError(f"cannot merge {path} into {paths[0]}: {problem}") from None
    unknown = [os.fspath(path) for path, stats in loaded if stats.documents is None]
    if unknown and len(paths) > 1:
        verb = "does" if len(unknown) == 1 else "do"
        click.echo(
            f"warning: {', '.join(unknown)} {verb} not record which documents were counted "
            "(written by release 0.1.0), so merge cannot check that none is counted twice",
            err=True,
        )
    return merged


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@out_file_option("Stats file to write (*.stats.safetensors).")
def merge(inputs: tuple[Path, ...], out: Path) -> None:
    """Sum the statistics files INPUTS, recorded over disjoint samples, into --out.

    The files must come from the same model (adapter and fingerprint) with the same components,
    domains (in the same order) and token scope. A file given twice, two files with identical
    contents, or two files that counted the same document of a task are refused: its samples
    would be counted twice.
    """
    check_outputs([out], inputs)
    merged = merge_files(list(inputs))
    merged.save(out)
    print_table(summary_table(merged, f"merged {len(inputs)} stats files"))
    click.echo(f"wrote {os.fspath(out)}")
