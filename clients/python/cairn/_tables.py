"""Tables for people (ML cube's `show_*` methods), printed with rich."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from typing import IO, Any


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    file: IO[str] | None = None,
) -> None:
    """Prints rows under their column names to file (stdout when None).

    Values are the server's data and are printed as they are, never read as rich markup
    (a description "[/link]" would otherwise raise MarkupError or restyle the table).
    """
    # Imported here: `import cairn` should not pay for rich, which only tables need.
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title), title_justify="left")
    for column in columns:
        table.add_column(Text(column), overflow="fold")
    for row in rows:
        table.add_row(*(Text(_cell(value)) for value in row))
    # rich sizes stdout to the terminal, or to 80 columns when stdout is piped; a file
    # given is printed 200 wide, so that fewer long values are folded.
    console = Console(file=file, width=None if file is None else 200, markup=False, highlight=False)
    console.print(table)


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
