"""Tables for people (ML cube's `show_*` methods), printed with rich."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from typing import IO, Any

from rich.console import Console
from rich.table import Table


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    file: IO[str] | None = None,
) -> None:
    """Prints rows under their column names to file (stdout when None)."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(value) for value in row))
    # A file that is not a terminal gets plain text, no colour codes, at a width no
    # value is cut at.
    Console(file=file, width=None if file is None else 200).print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def millis(value: int | None) -> str | None:
    """A time in milliseconds since the epoch as UTC, to the second."""
    if value is None:
        return None
    moment = datetime.datetime.fromtimestamp(value / 1000, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")
