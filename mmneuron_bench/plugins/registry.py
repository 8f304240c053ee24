"""Plugin loading: entry points, per-plugin isolation and the adapter name rules.

Core code asks :func:`get_registry` for adapters and intervention kinds and never calls
``pm.hook`` itself. Rules: built-in plugins (those of the ``mmneuron-bench`` distribution)
load first and win a name clash; between third-party plugins, the entry point that sorts first
wins. Every refused adapter or kind and every plugin that fails to import or register is
reported by name, and the healthy plugins still load.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from mmneuron_bench.errors import AdapterError
from mmneuron_bench.interventions.base import InterventionKind
from mmneuron_bench.models.adapter import ModelAdapter
from mmneuron_bench.plugins import hookspecs

ENTRY_POINT_GROUP = "mmneuron_bench"
DISABLE_AUTOLOAD_ENV = "MMNEURON_BENCH_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN_DISTRIBUTION = "mmneuron-bench"


@dataclass(frozen=True)
class PluginProblem:
    """A plugin, or one adapter of it, that was not loaded, and why."""

    plugin: str
    message: str


@dataclass(frozen=True)
class RegisteredAdapter:
    adapter: ModelAdapter
    plugin: str
    builtin: bool


@dataclass(frozen=True)
class RegisteredKind:
    kind: InterventionKind
    plugin: str
    builtin: bool


@dataclass
class PluginRegistry:
    """The loaded plugins, their adapters, and what went wrong while loading them."""

    manager: pluggy.PluginManager
    builtin_plugins: set[str] = field(default_factory=set)
    adapters: dict[str, RegisteredAdapter] = field(default_factory=dict)
    interventions: dict[str, RegisteredKind] = field(default_factory=dict)
    problems: list[PluginProblem] = field(default_factory=list)

    def adapter(self, name: str) -> ModelAdapter:
        """The adapter called ``name``; an unknown name is an :class:`AdapterError`."""
        if name not in self.adapters:
            known = ", ".join(sorted(self.adapters)) or "none"
            raise AdapterError(f"unknown adapter {name!r} (installed: {known})")
        return self.adapters[name].adapter

    def adapter_for_config(self, config: Any) -> ModelAdapter:
        """The first adapter (built-ins first) that handles a transformers config; a model
        that adapter refuses, or that no adapter handles and one refuses, is an error saying
        why."""
        kind = getattr(config, "model_type", type(config).__name__)
        for entry in self.adapters.values():
            if entry.adapter.handles(config):
                reason = entry.adapter.refusal(config)
                if reason:
                    raise AdapterError(f"model type {kind!r}: {reason}")
                return entry.adapter
        for entry in self.adapters.values():
            reason = entry.adapter.refusal(config)
            if reason:
                raise AdapterError(f"model type {kind!r}: {reason}")
        raise AdapterError(f"no installed adapter handles model type {kind!r}")

    def intervention_args(self) -> dict[str, InterventionKind]:
        """Every model argument key of every intervention kind -> its kind."""
        return {key: r.kind for r in self.interventions.values() for key in r.kind.args}

    def register_commands(self, cli: Any) -> None:
        """Let every plugin add its Click subcommands; a failing plugin is reported."""
        for plugin_name, impl in self._impls("mmneuron_register_commands"):
            before = dict(cli.commands)
            try:
                impl.function(cli=cli)
            except Exception as exc:  # noqa: BLE001 - one broken plugin must not hide others
                cli.commands.clear()
                cli.commands.update(before)
                self.problems.append(PluginProblem(plugin_name, _describe(exc)))

    def _impls(self, hook_name: str) -> list[tuple[str, Any]]:
        """Implementations of one hook in load order (built-ins first), with plugin names."""
        impls = {
            impl.plugin_name: impl for impl in getattr(self.manager.hook, hook_name).get_hookimpls()
        }
        order = [name for name, _ in self.manager.list_name_plugin()]
        return [(name, impls[name]) for name in order if name in impls]

    def _collect(self, hook_name: str, add: Any) -> None:
        """Call every plugin's ``hook_name`` with a ``register`` callback that passes what it
        registers to ``add(item, plugin, builtin)``; a plugin that raises is reported."""
        for plugin_name, impl in self._impls(hook_name):
            builtin = plugin_name in self.builtin_plugins

            def register(item, _plugin=plugin_name, _builtin=builtin) -> None:
                add(item, _plugin, _builtin)

            try:
                impl.function(register=register)
            except Exception as exc:  # noqa: BLE001 - one broken plugin must not hide others
                self.problems.append(PluginProblem(plugin_name, _describe(exc)))

    def _add_kind(self, kind: InterventionKind, plugin: str, builtin: bool) -> None:
        if not isinstance(kind, InterventionKind):
            raise TypeError(f"register() expects an InterventionKind, got {type(kind).__name__}")
        if not kind.args:
            raise TypeError(f"intervention kind {kind.name!r} declares no argument")
        taken = self.intervention_args()
        clash = self.interventions.get(kind.name) or next(
            (self.interventions[taken[k].name] for k in kind.args if k in taken), None
        )
        if clash is not None:
            owner = "built-in kind" if clash.builtin else "kind"
            self.problems.append(
                PluginProblem(
                    plugin,
                    f"intervention kind {kind.name!r} ignored: its name or an argument is taken "
                    f"by the {owner} {clash.kind.name!r} of plugin {clash.plugin!r}",
                )
            )
            return
        self.interventions[kind.name] = RegisteredKind(kind, plugin, builtin)

    def _add_adapter(self, adapter: ModelAdapter, plugin: str, builtin: bool) -> None:
        if not isinstance(adapter, ModelAdapter):
            raise TypeError(
                f"register() expects a ModelAdapter instance, got {type(adapter).__name__}"
            )
        adapter.validate()
        taken = self.adapters.get(adapter.name)
        if taken is not None:
            owner = "built-in adapter" if taken.builtin else "adapter"
            self.problems.append(
                PluginProblem(
                    plugin,
                    f"adapter {adapter.name!r} ignored: the name is taken by the {owner} "
                    f"of plugin {taken.plugin!r}",
                )
            )
            return
        self.adapters[adapter.name] = RegisteredAdapter(adapter, plugin, builtin)


def _describe(exc: BaseException) -> str:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


def _is_builtin(ep: EntryPoint) -> bool:
    dist = getattr(ep, "dist", None)
    return dist is not None and dist.name.replace("_", "-").lower() == BUILTIN_DISTRIBUTION


def _ordered_entry_points() -> list[tuple[EntryPoint, bool]]:
    eps = [(ep, _is_builtin(ep)) for ep in entry_points(group=ENTRY_POINT_GROUP)]
    return sorted(eps, key=lambda item: (not item[1], item[0].name))


def autoload_disabled() -> bool:
    """True when the environment asks to load built-in plugins only."""
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() not in ("", "0", "false", "no")


def build_registry(extra_plugins: Iterable[tuple[str, object]] = ()) -> PluginRegistry:
    """Load built-in and third-party plugins (plus ``extra_plugins``, as third-party ones).

    Setting ``MMNEURON_BENCH_DISABLE_PLUGIN_AUTOLOAD=1`` skips third-party entry points;
    the built-in adapters still load.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    registry = PluginRegistry(manager)
    candidates: list[tuple[str, Any, bool]] = []
    for ep, builtin in _ordered_entry_points():
        if builtin or not autoload_disabled():
            candidates.append((ep.name, ep, builtin))
    candidates += [(name, plugin, False) for name, plugin in extra_plugins]
    for name, source, builtin in candidates:
        if manager.has_plugin(name):
            registry.problems.append(PluginProblem(name, "a plugin of this name is already loaded"))
            continue
        try:
            plugin = source.load() if isinstance(source, EntryPoint) else source
            manager.register(plugin, name=name)
        except Exception as exc:  # noqa: BLE001
            registry.problems.append(PluginProblem(name, _describe(exc)))
            continue
        try:
            manager.check_pending()
        except pluggy.PluginValidationError as exc:
            manager.unregister(name=name)
            registry.problems.append(PluginProblem(name, _describe(exc)))
            continue
        if builtin:
            registry.builtin_plugins.add(name)
    registry._collect("mmneuron_register_adapters", registry._add_adapter)
    registry._collect("mmneuron_register_interventions", registry._add_kind)
    return registry


@functools.lru_cache(maxsize=1)
def get_registry() -> PluginRegistry:
    """The process-wide registry, built on first use."""
    return build_registry()
