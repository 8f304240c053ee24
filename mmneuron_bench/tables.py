"""Tables as data, rendered for the terminal, HTML and markdown alike.

The terminal rendering never cuts a cell. Numbers keep their full width; text cells wrap at
spaces when the table would be too wide; headers wrap at spaces and after ``_``; a table still
wider than the terminal is split into column groups, each repeating the leading label columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rich.table import Table as RichTable
from rich.text import Text

HEADER_WIDTH = 14  # a header word longer than this (and than its column's cells) wraps
TEXT_WIDTH = 16  # text columns may be narrowed to this (or their longest word) to fit


@dataclass
class Table:
    """A captioned table of strings; the first ``keep`` columns label the rows."""

    caption: str
    header: list[str]
    rows: list[list[str]]
    keep: int = 1
    heat: bool = False  # cells are signed changes: the HTML report colours them

    def numeric(self, column: int) -> bool:
        """Whether every cell of a column is a number (``-``, ``a ± b``, ``a / b``, ``a [b, c]``
        count; a trailing ``*`` too): right-aligned, and never wrapped."""
        cells = [row[column] for row in self.rows if row[column] != ""]
        return bool(cells) and all(_is_number(cell) for cell in cells)


def _is_number(cell: str) -> bool:
    first = cell.replace(" ± ", " ").replace(" / ", " ").split(" ")[0].rstrip("*")
    try:
        float(first)
    except ValueError:
        return cell == "-"
    return True


def _longest(texts: list[str], pattern: str = r"\s+") -> int:
    return max((len(w) for t in texts for w in re.split(pattern, t)), default=0)


def _widths(table: Table, width: int) -> list[int]:
    """Column widths: numbers whole; text columns narrowed (widest first) while too wide."""
    widths, floors = [], []
    for i, name in enumerate(table.header):
        cells = [row[i] for row in table.rows]
        header = min(_longest([name]), HEADER_WIDTH)
        natural = max(max((len(c) for c in cells), default=0), header, 1)
        widths.append(natural)
        floor = natural if table.numeric(i) else max(min(natural, TEXT_WIDTH), _longest(cells))
        floors.append(max(floor, header))
    while _rendered_width(widths) > width:
        shrinkable = [i for i in range(len(widths)) if widths[i] > floors[i]]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda i: widths[i])
        widths[widest] = max(floors[widest], widths[widest] - (_rendered_width(widths) - width))
    return widths


def _rendered_width(widths: list[int]) -> int:
    """Width of a rich table with these column widths: one space of padding each side and a
    border between and around the columns."""
    return sum(widths) + 3 * len(widths) + 1


def wrap_header(text: str, width: int) -> str:
    """``text`` in lines of at most ``width``, broken at spaces and after ``_``, ``-``, ``,``."""
    lines: list[str] = []
    line = ""
    for spaced, piece in re.findall(r"(\s*)([^\s_,-]*[_,-]|[^\s_,-]+)", text):
        joined = line + (" " if spaced and line else "") + piece
        if len(joined) <= width or not line:
            line = joined
        else:
            lines.append(line)
            line = piece
        while len(line) > width:  # a single piece longer than the column
            lines.append(line[:width])
            line = line[width:]
    return "\n".join([*lines, line] if line else lines)


def column_groups(widths: list[int], keep: int, width: int) -> list[list[int]]:
    """Column indices of each part: the label columns, then as many more as fit ``width``."""
    labels = list(range(min(keep, len(widths))))
    groups: list[list[int]] = []
    current: list[int] = []
    for column in range(len(labels), len(widths)):
        trial = labels + current + [column]
        if current and _rendered_width([widths[i] for i in trial]) > width:
            groups.append(labels + current)
            current = []
        current.append(column)
    groups.append(labels + current)
    return groups


def fitted(table: Table, width: int) -> list[RichTable]:
    """The table as one or more rich tables no wider than ``width`` (where that is possible:
    a single number wider than the terminal is shown whole and the terminal wraps it)."""
    widths = _widths(table, width)
    groups = column_groups(widths, table.keep, width)
    parts = []
    for n, columns in enumerate(groups, start=1):
        title = table.caption if len(groups) == 1 else f"{table.caption} ({n}/{len(groups)})"
        out = RichTable(title=Text(title))  # plain text: tokens such as "[/INST]" are no markup
        for i in columns:
            numeric = table.numeric(i)
            out.add_column(
                wrap_header(table.header[i], widths[i]),
                justify="right" if numeric else "left",
                overflow="fold",
                no_wrap=numeric,
                width=widths[i],
            )
        for row in table.rows:
            out.add_row(*(Text(row[i]) for i in columns))
        parts.append(out)
    return parts
