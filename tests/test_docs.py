"""The docs: every hook with its exact signature, and only commands and options that exist."""

from __future__ import annotations

import inspect
import re
import shlex
from pathlib import Path

import click

from mmneuron_bench.cli import build_cli
from mmneuron_bench.plugins import hookspecs

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def _hook_names() -> list[str]:
    return [name for name in dir(hookspecs) if name.startswith("mmneuron_")]


def _signature(name: str) -> str:
    """``name(arg: Type, ...) -> Return`` as written in the source (annotations are strings)."""
    sig = inspect.signature(getattr(hookspecs, name))
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"{name}({params}) -> {sig.return_annotation}"


def test_every_hook_is_documented_with_its_exact_signature():
    text = DOCS.read_text()
    assert _hook_names(), "no hooks found"
    for name in _hook_names():
        signature = _signature(name)
        assert f"### `{signature}`" in text, f"docs/plugins.md lacks the heading for {signature}"


def test_docs_mention_no_unknown_hook():
    documented = set(re.findall(r"### `(mmneuron_\w+)\(", DOCS.read_text()))
    assert documented == set(_hook_names())


def _doc_command_lines() -> list[tuple[str, list[str]]]:
    """Every ``mmneuron-bench ...`` command in the README's and docs' bash blocks, as tokens."""
    root = DOCS.parents[1]
    found = []
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                if "mmneuron-bench" not in line:
                    continue
                tokens = shlex.split(line, comments=True)
                while "mmneuron-bench" in tokens:
                    tokens = tokens[tokens.index("mmneuron-bench") + 1 :]
                    end = next((i for i, t in enumerate(tokens) if t in ("&&", ";", "|")), None)
                    found.append((f"{path.name}: {line.strip()}", tokens[:end]))
                    tokens = tokens[end:] if end is not None else []
    return found


def test_every_documented_command_names_real_subcommands_and_options():
    cli = build_cli()
    lines = _doc_command_lines()
    assert len(lines) > 20, "the docs' commands were not found"
    for where, tokens in lines:
        command, args = cli, list(tokens)
        while isinstance(command, click.Group) and args and not args[0].startswith("-"):
            assert args[0] in command.commands, f"{where}: no command {args[0]!r}"
            command = command.commands[args.pop(0)]
        known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        for arg in args:
            option = arg.split("=", 1)[0]
            if option.startswith("--") and arg != "...":
                assert option in known | {"--help"}, f"{where}: {command.name} has no {option}"


def test_the_documented_adapter_is_short_and_resolves_like_the_builtin(tiny_llava_next):
    """docs/plugins.md's factory-built adapter: at most 15 lines of class, and on a LLaVA-NeXT
    checkpoint the same components, activation modules and output projections as ours."""
    from mmneuron_bench.models.loading import load_model

    [code] = re.findall(r"```python\n(from mmneuron_bench import ModelAdapter.*?)```",
                        DOCS.read_text(), flags=re.S)  # fmt: skip
    body = code[code.index("class MyAdapter") : code.index("@hookimpl")].strip().splitlines()
    assert len(body) <= 15, body
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 - our own documentation
    adapter = namespace["MyAdapter"]()
    adapter.validate()
    loaded = load_model(str(tiny_llava_next))
    mine, ours = adapter.resolve(loaded.model), loaded.adapter.resolve(loaded.model)
    assert [(c.info, c.modules, c.outputs) for c in mine] == [
        (c.info, c.modules, c.outputs) for c in ours
    ]
    assert adapter.language_model(loaded.model) == loaded.adapter.language_model(loaded.model)
