"""``mmneuron-bench adapters``: what is installed, and the components of a model."""

from __future__ import annotations

import json

import click
from rich.console import Console

from mmneuron_bench.console import print_table
from mmneuron_bench.models.adapter import Component
from mmneuron_bench.plugins.registry import PluginRegistry, get_registry
from mmneuron_bench.tables import Table


def _adapters_table(registry: PluginRegistry) -> Table:
    rows = [
        [
            name,
            entry.plugin,
            "built-in" if entry.builtin else "third-party",
            ", ".join(entry.adapter.model_types or entry.adapter.architectures),
            entry.adapter.lmms_eval_model or "-",
        ]
        for name, entry in registry.adapters.items()
    ]
    header = ["adapter", "plugin", "source", "model types", "lmms-eval model"]
    return Table("Installed adapters", header, rows)


def _components_table(title: str, components: list[Component]) -> Table:
    rows = [
        [
            c.name,
            c.role,
            str(c.info.layers),
            str(c.info.width),
            c.spec.pattern,
            ", ".join(map(str, c.unused_layers)) or "-",
        ]
        for c in components
    ]
    header = ["component", "role", "layers", "width", "module", "unused layers"]
    return Table(title, header, rows)


def components_json(components: list[Component]) -> dict:
    """Components described as in a stats file's metadata, plus module pattern and unused layers."""
    return {
        c.name: {
            **c.info.to_meta(),
            "module": c.spec.pattern,
            "unused_layers": list(c.unused_layers),
        }
        for c in components
    }


@click.command()
@click.option("--pretrained", help="Model path or Hugging Face id: show its components.")
@click.option("--model", "adapter_name", help="Adapter name (default: chosen from the config).")
@click.option("--check", is_flag=True, help="Load the weights and check every hook fires.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def adapters(pretrained: str | None, adapter_name: str | None, check: bool, as_json: bool) -> None:
    """List installed adapters, or the components of the model at --pretrained."""
    registry = get_registry()
    console = Console()
    err = Console(stderr=True)
    for problem in registry.problems:
        err.print(f"[yellow]warning:[/] plugin {problem.plugin!r}: {problem.message}", markup=True)
    if pretrained is None:
        for given, option in ((check, "--check"), (adapter_name, "--model")):
            if given:
                raise click.UsageError(f"{option} needs --pretrained (the model to resolve)")
        if as_json:
            click.echo(json.dumps(_adapters_json(registry), indent=2))
        else:
            print_table(_adapters_table(registry), console)
        return
    from mmneuron_bench.models.loading import resolve_components

    adapter, components = resolve_components(pretrained, adapter_name, check=check)
    if as_json:
        click.echo(json.dumps(components_json(components), indent=2))
    else:
        print_table(_components_table(f"{adapter.name}: {pretrained}", components), console)
        for role, reason in adapter.no_neurons.items():
            console.print(f"no {role} neurons: {reason}", markup=False, highlight=False)


def _adapters_json(registry: PluginRegistry) -> list[dict]:
    return [
        {
            "name": name,
            "plugin": entry.plugin,
            "builtin": entry.builtin,
            "model_types": list(entry.adapter.model_types),
            "architectures": list(entry.adapter.architectures),
            "lmms_eval_model": entry.adapter.lmms_eval_model,
            "no_neurons": dict(entry.adapter.no_neurons),
        }
        for name, entry in registry.adapters.items()
    ]
