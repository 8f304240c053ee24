"""The ``mmneuron-bench`` command line: a Click group that plugins can extend."""

from __future__ import annotations

import importlib
import pkgutil

import click

from mmneuron_bench import __version__
from mmneuron_bench.errors import MMNeuronError


class _Group(click.Group):
    """Turns the project's errors into Click's one-line ``Error: ...`` and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MMNeuronError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="mmneuron-bench")
def cli() -> None:
    """Find domain-specific neurons of multimodal LLMs and evaluate with them switched off."""


def _add_builtin_commands(group: click.Group) -> None:
    """Add every module of ``mmneuron_bench.commands``: each defines a command of its name."""
    from mmneuron_bench import commands

    for module_info in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"{commands.__name__}.{module_info.name}")
        group.add_command(getattr(module, module_info.name))


def build_cli() -> click.Group:
    """The CLI with the built-in commands and every plugin's commands."""
    from mmneuron_bench.plugins import get_registry

    _add_builtin_commands(cli)
    get_registry().register_commands(cli)
    return cli


def main() -> None:
    build_cli()(prog_name="mmneuron-bench")


if __name__ == "__main__":
    main()
