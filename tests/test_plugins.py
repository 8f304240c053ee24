"""Plugin loading: built-ins through entry points, isolation of broken plugins, clash rules."""

from __future__ import annotations

import textwrap

import click
import pytest
from click.testing import CliRunner

from mmneuron_bench.adapters.llava import LlavaAdapter
from mmneuron_bench.plugins.hookspecs import hookimpl
from mmneuron_bench.plugins.registry import DISABLE_AUTOLOAD_ENV, build_registry
from mmneuron_bench.testing.families import families

# Every built-in adapter is a family the conformance tests declare, and the other way round.
BUILTINS = set(families())


def _install_fake_distribution(root, name: str, entry_points: dict[str, str], modules: dict):
    """A real dist-info on sys.path, so importlib.metadata finds its entry points."""
    dist = root / f"{name}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "\n".join(f"{ep} = {target}" for ep, target in entry_points.items())
    (dist / "entry_points.txt").write_text(f"[mmneuron_bench]\n{lines}\n")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


class RenamedLlava(LlavaAdapter):
    name = "my_llava"


def test_builtins_load_through_entry_points():
    registry = build_registry()
    assert BUILTINS <= set(registry.adapters)
    for name in BUILTINS:
        entry = registry.adapters[name]
        assert entry.builtin and entry.plugin == name
        assert entry.adapter.__module__ == f"mmneuron_bench.adapters.{name}"
    assert registry.problems == []


def test_broken_plugins_are_reported_and_healthy_ones_load(tmp_path, monkeypatch):
    _install_fake_distribution(
        tmp_path,
        "fake-plugins",
        {
            "explodes_on_import": "fake_import_error",
            "explodes_on_register": "fake_register_error",
            "healthy": "fake_healthy",
        },
        {
            "fake_import_error": "raise RuntimeError('cannot import this plugin')\n",
            "fake_register_error": """
                from mmneuron_bench.plugins.hookspecs import hookimpl

                @hookimpl
                def mmneuron_register_adapters(register):
                    raise ValueError("registration failed")
            """,
            "fake_healthy": """
                from mmneuron_bench.adapters.llava import LlavaAdapter
                from mmneuron_bench.plugins.hookspecs import hookimpl

                class HealthyAdapter(LlavaAdapter):
                    name = "healthy_llava"

                @hookimpl
                def mmneuron_register_adapters(register):
                    register(HealthyAdapter())
            """,
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = build_registry()
    problems = {p.plugin: p.message for p in registry.problems}
    assert problems["explodes_on_import"] == "RuntimeError: cannot import this plugin"
    assert problems["explodes_on_register"] == "ValueError: registration failed"
    assert "healthy" not in problems
    assert registry.adapters["healthy_llava"].plugin == "healthy"
    assert not registry.adapters["healthy_llava"].builtin
    assert BUILTINS <= set(registry.adapters)


def test_disabling_autoload_keeps_builtins_only(tmp_path, monkeypatch):
    _install_fake_distribution(
        tmp_path,
        "fake-third-party",
        {"third": "fake_third"},
        {"fake_third": "raise RuntimeError('should not be imported')\n"},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    registry = build_registry()
    assert set(registry.adapters) == BUILTINS
    assert registry.problems == []


def test_builtin_wins_a_name_clash_and_the_clash_is_reported():
    class Impostor:
        @hookimpl
        def mmneuron_register_adapters(self, register):
            register(LlavaAdapter())

    registry = build_registry([("impostor", Impostor())])
    assert registry.adapters["llava"].builtin
    assert registry.adapters["llava"].plugin == "llava"
    [problem] = registry.problems
    assert problem.plugin == "impostor"
    assert "'llava'" in problem.message and "built-in" in problem.message


def test_first_third_party_plugin_keeps_a_contested_name():
    def plugin(label):
        class Plugin:
            @hookimpl
            def mmneuron_register_adapters(self, register):
                register(RenamedLlava())

        return (label, Plugin())

    registry = build_registry([plugin("first"), plugin("second")])
    assert registry.adapters["my_llava"].plugin == "first"
    assert [p.plugin for p in registry.problems] == ["second"]


def test_misspelled_hook_and_wrong_registration_are_reported():
    class Misspelled:
        @hookimpl
        def mmneuron_register_adaptors(self, register):  # sic
            register(RenamedLlava())

    class NotAnAdapter:
        @hookimpl
        def mmneuron_register_adapters(self, register):
            register("llava")

    registry = build_registry([("misspelled", Misspelled()), ("wrong", NotAnAdapter())])
    problems = {p.plugin: p.message for p in registry.problems}
    assert "mmneuron_register_adaptors" in problems["misspelled"]
    assert "ModelAdapter" in problems["wrong"]
    assert "my_llava" not in registry.adapters


def test_incomplete_adapter_is_refused():
    class NoComponents(LlavaAdapter):
        name = "broken"
        components = ()

    class Plugin:
        @hookimpl
        def mmneuron_register_adapters(self, register):
            register(NoComponents())

    registry = build_registry([("incomplete", Plugin())])
    assert "broken" not in registry.adapters
    assert "components" in registry.problems[0].message


def test_unknown_adapter_names_the_installed_ones():
    from mmneuron_bench.errors import AdapterError

    with pytest.raises(AdapterError, match="unknown adapter 'nope'.*llava_next"):
        build_registry().adapter("nope")


def test_plugins_add_cli_commands_and_a_broken_one_is_isolated():
    class Commands:
        @hookimpl
        def mmneuron_register_commands(self, cli):
            @cli.command()
            def hello():
                click.echo("hello from a plugin")

    class BrokenCommands:
        @hookimpl
        def mmneuron_register_commands(self, cli):
            @cli.command()
            def half_added():
                pass

            raise RuntimeError("boom")

    group = click.Group()
    registry = build_registry([("commands", Commands()), ("broken", BrokenCommands())])
    registry.register_commands(group)
    assert set(group.commands) == {"hello"}
    assert registry.problems[0].plugin == "broken"
    result = CliRunner().invoke(group, ["hello"])
    assert result.output == "hello from a plugin\n"
