"""Options and helpers shared by the commands that load a model or read lmms-eval tasks."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import click
from click.core import ParameterSource

from mmneuron_bench.errors import MMNeuronError

DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelChoice:
    """Which model to load and where: ``--model``, ``--pretrained``, ``--device``, ``--dtype``,
    and for ``--device auto`` ``--max-memory`` and ``--offload-folder``."""

    adapter_name: str | None
    pretrained: str
    device: str
    dtype: str
    max_memory: dict | None = None
    offload_folder: str | None = None

    def torch_dtype(self):
        """The torch dtype named by ``dtype`` (``"auto"`` lets transformers choose)."""
        import torch

        return "auto" if self.dtype == "auto" else getattr(torch, self.dtype)

    def adapter(self):
        """The adapter of the model (named, or chosen from its config): no weights loaded."""
        from mmneuron_bench.models.loading import load_config, pick_adapter
        from mmneuron_bench.plugins.registry import get_registry

        return pick_adapter(get_registry(), load_config(self.pretrained), self.adapter_name)

    def placement(self):
        """Where the weights go (:class:`~mmneuron_bench.models.placement.Placement`)."""
        from mmneuron_bench.models.placement import Placement

        return Placement(self.device, self.max_memory, self.offload_folder)

    def load(self, processes=None):
        """Pick the adapter and load model and processor, placed for this process among
        ``processes`` (:func:`mmneuron_bench.distributed.processes`; default: the only one)."""
        from mmneuron_bench.distributed import SINGLE
        from mmneuron_bench.models.loading import load_model

        placement = self.placement().for_process(processes or SINGLE)
        return load_model(self.pretrained, self.adapter_name, self.torch_dtype(), placement)


def model_options(command: Callable) -> Callable:
    """Add ``--model``, ``--pretrained``, ``--device`` and ``--dtype``.

    The command receives them as one keyword argument, ``model`` (a :class:`ModelChoice`).
    """

    @functools.wraps(command)
    def with_model(
        *args, adapter_name, pretrained, device, dtype, max_memory, offload_folder, **kwargs
    ):
        if device != "auto" and (max_memory is not None or offload_folder is not None):
            given = "--max-memory" if max_memory is not None else "--offload-folder"
            raise OptionConflict(f"{given} needs --device auto")
        folder = None if offload_folder is None else os.fspath(offload_folder)
        choice = ModelChoice(adapter_name, pretrained, device, dtype, max_memory, folder)
        return command(*args, model=choice, **kwargs)

    options = (
        click.option(
            "--model", "adapter_name", help="Adapter name (default: chosen from the config)."
        ),
        click.option("--pretrained", required=True, help="Model path or Hugging Face id."),
        click.option(
            "--device",
            default="cpu",
            show_default=True,
            callback=_check_device,
            help="cpu, cuda, cuda:1, ..., or auto: the model dispatched by accelerate over "
            "every visible device, offloading what does not fit to the CPU and the disk.",
        ),
        click.option(
            "--dtype",
            type=click.Choice(DTYPE_NAMES),
            default="auto",
            show_default=True,
            help="Weights dtype.",
        ),
        click.option(
            "--max-memory",
            callback=_max_memory,
            metavar="DEVICE=SIZE,...",
            help="--device auto: memory per device (GPU index, cpu, disk), e.g. 0=20GiB,cpu=64GiB.",
        ),
        click.option(
            "--offload-folder",
            type=click.Path(file_okay=False, path_type=Path),
            help="--device auto: folder for weights offloaded to the disk.",
        ),
    )
    for option in reversed(options):
        with_model = option(with_model)
    return with_model


def _max_memory(_ctx: click.Context, _param: click.Parameter, value: str | None):
    from mmneuron_bench.models.placement import parse_max_memory

    try:
        return None if value is None else parse_max_memory(value)
    except MMNeuronError as exc:
        raise click.BadParameter(str(exc)) from None


def _check_device(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """A torch device this machine has, or ``auto`` (checked before any model is loaded)."""
    import torch

    if value == "auto":
        return value
    try:
        device = torch.device(value)
    except RuntimeError:
        raise click.BadParameter(
            f"{value!r} is not a torch device (cpu, cuda, cuda:1, ...)"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise click.BadParameter(f"{value!r}: this torch has no CUDA device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise click.BadParameter(f"{value!r}: only {torch.cuda.device_count()} CUDA devices")
    return value


class OptionConflict(click.ClickException):
    """Options that make no sense together: one line ``Error: ...``, exit code 2 (usage)."""

    exit_code = 2


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses NaN and infinity (which pass its bounds check)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def out_file_option(help: str) -> Callable:
    """The required ``--out FILE`` of a command that writes one file."""
    return click.option(
        "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help=help
    )


def check_output_files(*paths: Path | None) -> None:
    """Fail before any work unless every output file can be written, and no two are the same."""
    given = [Path(p) for p in paths if p is not None]
    for i, path in enumerate(given):
        if path.resolve() in {p.resolve() for p in given[:i]}:
            raise MMNeuronError(f"{path}: given for two outputs")
        if path.is_dir():
            raise MMNeuronError(f"{path}: is a folder, not a file")
        if not path.parent.is_dir():
            raise MMNeuronError(f"{path}: cannot write (no folder {path.parent})")
        if not os.access(path.parent, os.W_OK):
            raise MMNeuronError(f"{path}: cannot write (folder {path.parent} is not writable)")


def check_output_folder(path: Path) -> None:
    """Fail before any work unless ``path`` is, or can be created as, a writable folder.

    Nothing is created here: a run that fails later leaves no empty folder behind.
    """
    if path.exists() and not path.is_dir():
        raise MMNeuronError(f"{path}: output path is a file, not a folder")
    existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise MMNeuronError(f"{path}: cannot write ({existing} is not a writable folder)")


def output_folder(path: str | os.PathLike) -> Path:
    """The output folder, created if needed (call :func:`check_output_folder` before any work:
    this one runs when there is something to write)."""
    out = Path(path)
    check_output_folder(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MMNeuronError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    return out


def task_names(values: Sequence[str]) -> list[str]:
    """``("a,b", "c")`` -> ``["a", "b", "c"]``: repeated or comma-separated ``--tasks``."""
    names = list(
        dict.fromkeys(n.strip() for value in values for n in value.split(",") if n.strip())
    )
    if not names:
        raise MMNeuronError("--tasks names no task")
    return names


def given_options(ctx: click.Context, names: Sequence[str]) -> set[str]:
    """Which of the parameters ``names`` were set on the command line or the environment."""
    sources = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return {name for name in names if ctx.get_parameter_source(name) in sources}


def domain_definitions(values: Sequence[str]) -> dict[str, list[str]]:
    """``record --domain``: ``["medical=pmc_vqa,slake", ...]`` -> ``{"medical": [...]}``."""
    domains: dict[str, list[str]] = {}
    for value in values:
        name, sep, tasks = value.partition("=")
        name = name.strip()
        task_list = [t.strip() for t in tasks.split(",") if t.strip()]
        if not sep or not name or not task_list:
            raise MMNeuronError(f"--domain {value!r} is not of the form NAME=TASK[,TASK...]")
        if "/" in name:
            raise MMNeuronError(f"domain name {name!r} must not contain '/'")
        if name in domains:
            raise MMNeuronError(f"domain {name!r} is given twice")
        repeated = next((t for i, t in enumerate(task_list) if t in task_list[:i]), None)
        if repeated is not None:
            raise MMNeuronError(f"task {repeated!r} is given twice for domain {name!r}")
        domains[name] = task_list
    if not domains:
        raise MMNeuronError("give at least one --domain NAME=TASK[,TASK...]")
    return domains


def _domain_choice(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]):
    from mmneuron_bench.interventions.targets import DomainChoice

    try:
        return DomainChoice.parse(values)
    except MMNeuronError as exc:
        raise click.BadParameter(str(exc)) from None


domain_choice_option = click.option(
    "--domain",
    "domain",
    multiple=True,
    callback=_domain_choice,
    metavar="CHOICE",
    help="Mask domains a task switches off: auto (each task its own, found from its name or "
    "metadata.domain), all, names joined by '+', or TASK=NAMES for one task (repeatable). "
    "[default: auto]",
)


def _module_sets(_ctx: click.Context, _param: click.Parameter, value: str) -> list[str]:
    from mmneuron_bench.interventions.targets import parse_module_sets

    try:
        return parse_module_sets(value)
    except MMNeuronError as exc:
        raise click.BadParameter(str(exc)) from None


def module_sets_option(default: str, several: bool) -> Callable:
    """``--modules``: one module set (``all``, ``none``, roles joined by '+') or, with
    ``several``, module sets separated by commas. The command gets a list of names."""
    what = "Module sets, comma-separated," if several else "The module set"
    return click.option(
        "--modules",
        default=default,
        show_default=True,
        callback=_module_sets,
        help=f"{what} whose neurons are switched off: all, none, or roles joined by '+' "
        "(vision+connector).",
    )


def task_options(required: bool = True, note: str = "") -> Callable:
    """``--tasks`` (comma-separated or repeated), ``--include-path`` and ``--limit``."""
    options = (
        click.option(
            "--tasks",
            "task_specs",
            multiple=True,
            required=required,
            help=f"lmms-eval tasks, comma-separated or repeated{note}.",
        ),
        click.option(
            "--include-path",
            "include_paths",
            multiple=True,
            help=f"Extra lmms-eval task folders{note}.",
        ),
        click.option(
            "--limit", type=click.IntRange(min=1), help=f"At most N documents per task{note}."
        ),
    )

    def wrap(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return wrap


preset_option = click.option(
    "--preset",
    type=click.Choice(["default", "paper"]),
    default="default",
    show_default=True,
    help="paper: the procedure of the papers' official code where this tool's default "
    "differs (docs/presets.md lists every difference).",
)
