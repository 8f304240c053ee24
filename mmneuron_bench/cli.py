"""The ``mmneuron-bench`` command line: a Click group that plugins can extend."""

from __future__ import annotations

import importlib

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


# Modules of mmneuron_bench.commands; each defines a Click command named like the module.
BUILTIN_COMMANDS = ("adapters", "record", "select", "merge")


def _add_builtin_commands(group: click.Group) -> None:
    for name in BUILTIN_COMMANDS:
        module = importlib.import_module(f"mmneuron_bench.commands.{name}")
        group.add_command(getattr(module, name))


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
