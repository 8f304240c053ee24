"""One shareable report from a results folder: the grid of ``run --grid`` and the outputs of
``analyze distribution``, ``deviation`` and ``logit-lens``, found anywhere under the folder.

The report is built once as sections of tables and figures, then rendered twice: a
self-contained HTML page (figures embedded as base64 data URIs) and a markdown summary (figures
linked by relative path).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mmneuron_bench.analysis import deviation, distribution, logit_lens
from mmneuron_bench.analysis.distribution import selection_table
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.formats.atomic import atomic_write
from mmneuron_bench.lmms import grid
from mmneuron_bench.tables import Table


@dataclass
class Figure:
    path: Path
    caption: str


@dataclass
class Section:
    title: str
    source: Path
    notes: list[str] = field(default_factory=list)
    blocks: list[Table | Figure] = field(default_factory=list)


@dataclass
class Report:
    root: Path
    sections: list[Section]
    missing: list[str]  # what was looked for and not found


def build_report(root: Path) -> Report:
    """Read every known output under ``root``; a malformed one is a one-line error."""
    if not root.is_dir():
        raise MMNeuronError(f"{root}: not a folder")
    found = {
        "grid (run --grid): no grid.json or grid.csv": [
            *_json_sections(root, "grid.json"),
            *_grid_csv_sections(root),
        ],
        "neuron distribution (analyze distribution): no distribution.json": _json_sections(
            root, "distribution.json"
        ),
        "hidden-state deviation (analyze deviation): no deviation.json": _json_sections(
            root, "deviation.json"
        ),
        "logit lens (analyze logit-lens): no logit_lens.json": _json_sections(
            root, "logit_lens.json"
        ),
    }
    sections = [section for found_sections in found.values() for section in found_sections]
    if not sections:
        raise MMNeuronError(
            f"{root}: found no grid.json, grid.csv, distribution.json, deviation.json or "
            "logit_lens.json to report"
        )
    return Report(root, sections, [what for what, got in found.items() if not got])


def write_report(report: Report, out_dir: Path) -> list[Path]:
    """Write ``report.html`` and ``report.md`` into ``out_dir``, each atomically."""
    page = render_html(report)
    summary = render_markdown(report, out_dir)
    paths = [out_dir / "report.html", out_dir / "report.md"]
    atomic_write(paths[0], lambda tmp: tmp.write_text(page, encoding="utf-8"))
    atomic_write(paths[1], lambda tmp: tmp.write_text(summary, encoding="utf-8"))
    return paths


# Reading the outputs ------------------------------------------------------------------------


def file_section(path: Path, source: Path | None = None) -> Section:
    """The report section of one output file (``grid.json``, ``distribution.json``,
    ``deviation.json`` or ``logit_lens.json``); ``source`` is the name it is shown under."""
    fmt, build = _READERS[path.name]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MMNeuronError(f"{path}: cannot read ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise MMNeuronError(f"{path}: not a {fmt} file")
    return _checked(path, build, path, data, source or path)


def _json_sections(root: Path, name: str) -> list[Section]:
    return [file_section(p, p.relative_to(root)) for p in sorted(root.rglob(name))]


def _checked(path: Path, build: Callable, *args) -> Section:
    """``build(*args)``, with a missing or mistyped field reported as one line naming ``path``."""
    try:
        return build(*args)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MMNeuronError(f"{path}: malformed ({type(exc).__name__}: {exc})") from None


def _grid_json_section(path: Path, data: dict, source: Path) -> Section:
    section = _grid_section(data["cells"], data, source)
    header = {k: v for k, v in data.items() if k != "cells"}
    changes = grid.grid_tables(header, data["cells"])[1]
    if any(cell != "-" for row in changes.rows for cell in row[1:]):
        section.blocks.append(changes)
    return section


def _grid_csv_sections(root: Path) -> list[Section]:
    """A section per grid.csv that has no grid.json beside it."""
    sections = []
    for path in sorted(root.rglob("grid.csv")):
        if path.with_name("grid.json").exists():
            continue
        with open(path, newline="", encoding="utf-8") as f:
            cells = list(csv.DictReader(f))
        if cells and tuple(cells[0]) != grid.CSV_COLUMNS:
            raise MMNeuronError(f"{path}: columns are not {','.join(grid.CSV_COLUMNS)}")
        sections.append(_checked(path, _grid_section, cells, {}, path.relative_to(root)))
    return sections


def _grid_section(cells: list[dict], meta: dict, source: Path) -> Section:
    """The paper's Table 1: rows (module set, mask), one column per task."""
    section = Section("Evaluation grid", source)
    if meta:
        model = meta["model"]
        section.notes.append(
            f"model {model.get('name_or_path')} (adapter {model.get('adapter')}); mask "
            f"{meta['mask'].get('path')} (sha256 {meta['mask'].get('sha256')}); "
            f"baseline: {meta.get('baseline') or 'none'}"
        )
    tasks = list(dict.fromkeys((c["task"], c["domain"], c["metric"]) for c in cells))
    rows = list(dict.fromkeys((c["module_set"], c["mask"]) for c in cells))
    values = {
        (c["module_set"], c["mask"], c["task"]): None
        if c["value"] in (None, "")
        else float(c["value"])
        for c in cells
    }
    header = ["module set", "mask"] + [f"{t} ({d}, {m})" for t, d, m in tasks]
    table_rows = [[s, m] + [_number(values.get((s, m, t))) for t, _, _ in tasks] for s, m in rows]
    section.blocks.append(
        Table("metric value per task with its domain's neurons off", header, table_rows)
    )
    return section


def _distribution_section(path: Path, data: dict, source: Path) -> Section:
    section = Section("Domain-specific neurons per layer", source)
    section.notes.append(f"mask {data['mask']['path']} (method {data['method']})")
    section.blocks.append(
        selection_table(
            "selected neurons per component and domain", data["domains"], data["components"]
        )
    )
    for name in data["components"]:
        _add_figure(section, path.parent / f"distribution_{name}.png", name)
    return section


def _deviation_section(path: Path, data: dict, source: Path) -> Section:
    """The paper's Table 2: rows module sets; per task, the mask and the random masks."""
    section = Section("Hidden-state deviation (%)", source)
    section.notes += [
        f"model {data['model']['name_or_path']}; mask {data['mask']['path']}; "
        f"{data['seeds']} random seeds",
        data["definition"],
    ]
    rows = data["rows"]
    unused = any(r.get("neurons_in_unused_layers") for r in rows)
    header = ["module set", "neurons", *(["in unused layers"] if unused else []), "mask",
              "random mean ± std"]  # fmt: skip
    for task, domain in dict.fromkeys((r["task"], r["domain"]) for r in rows):
        table_rows = [
            [
                r["module_set"],
                str(r["neurons"]),
                *([str(r.get("neurons_in_unused_layers", 0))] if unused else []),
                f"{r['dape']:.3f}",
                f"{r['random_mean']:.3f} ± {r['random_std']:.3f}",
            ]
            for r in rows
            if r["task"] == task
        ]
        caption = f"{task} (domain {domain}): deviation of the last hidden states (%)"
        section.blocks.append(Table(caption, header, table_rows))
    return section


def _lens_section(path: Path, data: dict, source: Path) -> Section:
    section = Section("Logit lens: mean next-token entropy (nats)", source)
    mask = data["mask"]
    masked = f"mask {mask['path']}, module set {data['module_set']}" if mask else "no mask"
    section.notes += [f"model {data['model']['name_or_path']}; {masked}", data["definition"]]
    for task, t in data["tasks"].items():
        curves = t["mean_entropy"]
        columns = [(c, k) for c, by_kind in curves.items() for k in by_kind]
        header = ["layer"] + [f"{k}, {c}" for c, k in columns]
        rows = [
            [str(layer)] + [_number(curves[c][k][layer]) for c, k in columns]
            for layer in range(t["layers"])
        ]
        domain = f", domain {t['domain']}" if t["domain"] else ""
        positions = ", ".join(f"{n} {k}" for k, n in t["positions"].items())
        caption = f"{task}{domain}: {t['samples']} samples, positions: {positions}"
        section.blocks.append(Table(caption, header, rows))
    _add_figure(section, path.parent / "logit_lens.png", "logit lens")
    return section


_READERS: dict[str, tuple[str, Callable[[Path, dict, Path], Section]]] = {
    "grid.json": (grid.GRID_FORMAT, _grid_json_section),
    "distribution.json": (distribution.FORMAT, _distribution_section),
    "deviation.json": (deviation.FORMAT, _deviation_section),
    "logit_lens.json": (logit_lens.FORMAT, _lens_section),
}


def _add_figure(section: Section, path: Path, caption: str) -> None:
    """Add the figure, or a note that its PNG is missing."""
    if path.is_file():
        section.blocks.append(Figure(path, caption))
    else:
        section.notes.append(f"figure {path.name} is missing")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


# Rendering ----------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
table { display: block; overflow-x: auto; }
caption { text-align: left; font-weight: bold; padding: 0.3em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
.num { text-align: right; }
th { background: #f3f3f3; }
figure { margin: 1em 0; }
img { max-width: 100%; }
.source, .missing { color: #666; font-size: 0.9em; }
"""


def render_html(report: Report) -> str:
    """A self-contained HTML page: every figure is embedded as a base64 PNG data URI."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>mmneuron-bench report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>mmneuron-bench report</h1>",
        f'<p class="source">results folder: {e(os.fspath(report.root))}</p>',
    ]
    for section in report.sections:
        parts.append(f"<section><h2>{e(section.title)}</h2>")
        parts.append(f'<p class="source">from {e(os.fspath(section.source))}</p>')
        parts += [f"<p>{e(note)}</p>" for note in section.notes]
        for block in section.blocks:
            if isinstance(block, Figure):
                data = base64.b64encode(block.path.read_bytes()).decode("ascii")
                parts.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{e(block.caption)}">'
                    f"<figcaption>{e(block.caption)}</figcaption></figure>"
                )
            else:
                parts.append(_html_table(block))
        parts.append("</section>")
    if report.missing:
        parts.append('<section><h2>Not found</h2><ul class="missing">')
        parts += [f"<li>{e(item)}</li>" for item in report.missing]
        parts.append("</ul></section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_table(table: Table) -> str:
    e = html.escape
    kinds = [' class="num"' if table.numeric(i) else "" for i in range(len(table.header))]

    def row(tag: str, cells: list[str]) -> str:
        return "".join(
            f"<{tag}{k}{_heat(c) if table.heat and tag == 'td' else ''}>{e(c)}</{tag}>"
            for c, k in zip(cells, kinds, strict=True)
        )

    body = "".join(f"<tr>{row('td', cells)}</tr>" for cells in table.rows)
    return (
        f"<table><caption>{e(table.caption)}</caption><thead><tr>{row('th', table.header)}</tr>"
        f"</thead><tbody>{body}</tbody></table>"
    )


def _heat(cell: str) -> str:
    """A background for a signed change: red for a fall, blue for a rise, stronger for larger
    changes (up to 0.3), and a bold border where the interval excludes 0 (``*``)."""
    try:
        value = float(cell.split(" ")[0])
    except ValueError:
        return ""
    strength = min(abs(value) / 0.3, 1.0)
    colour = (220, 60, 50) if value < 0 else (50, 100, 220)
    rgba = f"rgba({colour[0]}, {colour[1]}, {colour[2]}, {0.1 + 0.6 * strength:.2f})"
    border = "; border: 2px solid #222" if cell.rstrip().endswith("*") else ""
    return f' style="background: {rgba}{border}"'


def render_markdown(report: Report, base: Path) -> str:
    """A markdown summary; figures are linked relative to ``base`` (the report's folder)."""
    lines = ["# mmneuron-bench report", "", f"Results folder: `{report.root}`", ""]
    for section in report.sections:
        lines += [f"## {section.title}", "", f"From `{section.source}`.", ""]
        for note in section.notes:
            lines += [_md(note), ""]
        for block in section.blocks:
            if isinstance(block, Figure):
                link = Path(os.path.relpath(block.path, base)).as_posix()
                lines += [f"![{_md(block.caption)}]({link})", ""]
            else:
                lines += [f"**{_md(block.caption)}**", "", *_markdown_table(block), ""]
    if report.missing:
        lines += ["## Not found", ""] + [f"- {_md(item)}" for item in report.missing] + [""]
    return "\n".join(lines)


def _markdown_table(table: Table) -> list[str]:
    def row(cells: list[str]) -> str:
        return "| " + " | ".join(_md(c) for c in cells) + " |"

    return [row(table.header), "|" + " --- |" * len(table.header), *map(row, table.rows)]


def _md(text: str) -> str:
    """Text with markdown's emphasis, link and table characters escaped."""
    for char in "\\*_[]|`":
        text = text.replace(char, "\\" + char)
    return text
