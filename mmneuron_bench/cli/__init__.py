"""The ``mmneuron-bench`` command line: a Click group that plugins can extend."""

from __future__ import annotations

import importlib
import pkgutil

import click

from mmneuron_bench import __version__
from mmneuron_bench.errors import MMNeuronError

_OUTPUT = "mmneuron_bench.library_output"
VERBOSE = "mmneuron_bench.verbose"


def _let_libraries_through(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[VERBOSE] = True
        if _OUTPUT in ctx.meta:
            ctx.meta[_OUTPUT].release()


def _add_verbose_option(command: click.Command) -> None:
    """Give ``command`` (and, for a group, each of its commands) a ``--verbose`` flag."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _add_verbose_option(sub)
        return
    if any("--verbose" in getattr(p, "opts", ()) for p in command.params):
        return
    command.params.append(
        click.Option(
            ["--verbose"],
            is_flag=True,
            expose_value=False,
            callback=_let_libraries_through,
            help="Let the libraries' logs, warnings and progress bars through.",
        )
    )


class _Group(click.Group):
    """Keeps the libraries' output out of the terminal (unless ``--verbose``), and the standard
    output of every process but the main one under ``accelerate launch``, and turns the
    project's errors into Click's one-line ``Error: ...`` and exit code 1."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        _add_verbose_option(cmd)
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context):
        from mmneuron_bench.console import quiet_libraries
        from mmneuron_bench.distributed import main_output_only
        from mmneuron_bench.versions import check_requirements

        with quiet_libraries() as output, main_output_only():
            ctx.meta[_OUTPUT] = output
            try:
                check_requirements()
                return super().invoke(ctx)
            except MMNeuronError as exc:
                raise click.ClickException(str(exc)) from None


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="mmneuron-bench")
def cli() -> None:
    """Find domain-specific neurons of multimodal LLMs and evaluate with them switched off."""


def _add_builtin_commands(group: click.Group) -> None:
    """Add every module of ``mmneuron_bench.cli.commands``: each defines a command of its name."""
    from mmneuron_bench.cli import commands

    for module_info in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"{commands.__name__}.{module_info.name}")
        group.add_command(getattr(module, module_info.name))


def build_cli() -> click.Group:
    """The CLI with the built-in commands and every plugin's commands."""
    from mmneuron_bench.plugins.registry import get_registry

    _add_builtin_commands(cli)
    get_registry().register_commands(cli)
    return cli


def main() -> None:
    build_cli()(prog_name="mmneuron-bench")
