"""Checks the commands make before they load anything: outputs that would overwrite an input,
seeds, and files made on another model (compared with the model's skeleton, built from its
config without weights)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import click

from mmneuron_bench.cli.options import ModelChoice, check_output_files, check_output_folder
from mmneuron_bench.errors import MMNeuronError

SEED_MAX = 2**32 - 1  # NumPy's seeds are 32-bit
SEED = click.IntRange(0, SEED_MAX)

allow_other_model_option = click.option(
    "--allow-other-model",
    is_flag=True,
    help="Apply files made on another model (a base model's mask on its fine-tune); the "
    "outputs record it.",
)


def check_outputs(
    outputs: Iterable[Path | None], inputs: Iterable[str | os.PathLike | None] = ()
) -> None:
    """Every output file can be written, no two are the same, and none is an input."""
    given = [Path(p) for p in outputs if p is not None]
    check_output_files(*given)
    check_not_inputs(given, inputs)


def check_folder_outputs(
    folder: Path, names: Iterable[str], inputs: Iterable[str | os.PathLike | None] = ()
) -> None:
    """The output folder can be written, and none of the files ``names`` it will hold is an
    input."""
    check_output_folder(folder)
    check_not_inputs([folder / name for name in names], inputs)


def check_not_inputs(outputs: Iterable[Path], inputs: Iterable[str | os.PathLike | None]) -> None:
    """Refuse an output that is an input file however it is spelled: relative or absolute,
    through a symbolic link, or a hard link of it."""
    sources = [Path(p) for p in inputs if p is not None]
    for output in outputs:
        for source in sources:
            if _same_file(output, source):
                raise MMNeuronError(
                    f"{output}: is the input {source}, which writing it would destroy; "
                    "give another output"
                )


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def model_inputs(model: ModelChoice) -> list[Path]:
    """The files the model is loaded from (a local folder's), which no output may overwrite."""
    from mmneuron_bench.models.folder import model_files

    return model_files(model.pretrained)


def task_inputs(include_paths: Iterable[str]) -> list[Path]:
    """The YAML and data files of the tasks in ``include_paths``."""
    from mmneuron_bench.domains.index import task_files

    return task_files(list(include_paths))


def model_skeleton(model: ModelChoice):
    """The model built from its config on the meta device (no weights), and its resolved
    components: what files are checked against before loading (its fingerprint is the loaded
    model's)."""
    from mmneuron_bench.models.loading import load_config

    adapter = model.adapter()
    skeleton = adapter.skeleton(load_config(model.pretrained))
    return skeleton, adapter.resolve(skeleton)
