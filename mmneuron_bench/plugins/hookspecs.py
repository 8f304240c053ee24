"""Hook specifications: the whole contract between mmneuron-bench and its plugins.

A plugin is a module or object with functions named like the specs below and decorated
with :data:`hookimpl`. Plugins are found through the entry-point group ``mmneuron_bench``;
the built-in adapters register through that group exactly as third-party ones do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from mmneuron_bench.interventions.base import InterventionKind
    from mmneuron_bench.models.adapter import ModelAdapter

PROJECT_NAME = "mmneuron_bench"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def mmneuron_register_adapters(register: Callable[[ModelAdapter], None]) -> None:
    """Register model adapters.

    Called once per plugin when the plugin manager is first built. Call ``register`` with
    one :class:`~mmneuron_bench.adapter.ModelAdapter` instance per model family the plugin
    supports. Not first-result: every plugin's implementation is called. A name already
    taken by a built-in adapter is refused and reported; between two third-party plugins,
    the one whose entry point sorts first keeps the name.

    :param register: callback taking one adapter instance.
    """


@hookspec
def mmneuron_register_interventions(register: Callable[[InterventionKind], None]) -> None:
    """Register kinds of intervention (changes to the model around each task or document).

    Called once per plugin when the plugin manager is first built. Call ``register`` with one
    :class:`~mmneuron_bench.interventions.base.InterventionKind` per kind: its name, the
    model arguments it takes (the first switches it on) and the function that builds the
    :class:`~mmneuron_bench.interventions.base.Intervention` from them. The kind is then
    usable from ``mmneuron-bench run --intervention KEY=VALUE`` and from lmms-eval's
    ``--model mmneuron --model_args KEY=VALUE``. Not first-result: every plugin's
    implementation is called. Built-in kinds win a clash of names or argument keys; between
    two third-party plugins, the one whose entry point sorts first keeps them.

    :param register: callback taking one intervention kind.
    """


@hookspec
def mmneuron_register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``mmneuron-bench`` command-line interface.

    Called once per plugin when the CLI starts, before arguments are parsed. Use
    ``@cli.command()`` or ``cli.add_command(...)``. Not first-result: every plugin's
    implementation is called.

    :param cli: the top-level Click group.
    """
