"""Rendering: ``-o json`` prints the API's JSON as it came; ``-o table`` a rich table of the
columns an operator scans for (lists) or every field (one object)."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


@dataclass(frozen=True)
class Column:
    """A table column: a header and how to get the cell from one API object."""

    header: str
    get: Callable[[dict], Any]


def col(header: str, key: str) -> Column:
    """A column showing ``obj[key]``."""
    return Column(header, lambda obj: obj.get(key))


def show(renderable: RenderableType) -> None:
    """Print to stdout: styled on a terminal; plain, unfolded, without trailing blanks in a pipe."""
    if sys.stdout.isatty():
        Console(highlight=False).print(renderable)
        return
    # Piped output keeps whole rows instead of folding them to 80 columns.
    width = int(os.environ.get("COLUMNS", 0) or 240)
    console = Console(file=io.StringIO(), width=width, highlight=False, no_color=True,
                      color_system=None)
    with console.capture() as captured:
        console.print(renderable)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
    sys.stdout.flush()


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def cell(value: Any) -> Text:
    """One value as table text; nested values as compact JSON; plain text, never markup."""
    if value is None:
        return Text("-", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, dict | list):
        if isinstance(value, list) and all(isinstance(v, str | int) for v in value):
            return Text(", ".join(str(v) for v in value) or "-")
        return Text(json.dumps(value, separators=(", ", ": ")))
    return Text(str(value))


def render_list(data: dict, columns: Sequence[Column], fmt: OutputFormat) -> None:
    """A list answer ``{"items": [...], "next_token": ...}``."""
    if fmt is OutputFormat.json:
        print_json(data)
        return
    items = data.get("items", [])
    table = Table(show_edge=False, box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column.header, overflow="fold")
    for obj in items:
        table.add_row(*(cell(column.get(obj)) for column in columns))
    show(table if items else Text("(none)", style="dim"))
    if data.get("next_token"):
        show(Text(f"more: --next-token {data['next_token']}", style="dim"))


def render_object(data: dict, fmt: OutputFormat, *, hide: Sequence[str] = ()) -> None:
    """One resource: every field as a key/value table (``hide`` omits bulky ones from it)."""
    if fmt is OutputFormat.json:
        print_json(data)
        return
    table = Table(show_header=False, show_edge=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in data.items():
        if key in hide:
            continue
        table.add_row(key, cell(value))
    show(table)


def render_message(data: dict, fmt: OutputFormat, message: str) -> None:
    """An answer without a resource (a delete): JSON, or one line for people."""
    if fmt is OutputFormat.json:
        print_json(data)
    else:
        show(Text(message))


def note(message: str) -> None:
    """Something for the human on stderr, so stdout stays parseable."""
    Console(stderr=True, highlight=False).print(Text(message))
