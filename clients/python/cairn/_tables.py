"""Tables for people (ML cube's `show_*` methods), printed with rich."""

from __future__ import annotations

import datetime
import functools
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any


def print_table(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    file: IO[str] | None = None,
) -> None:
    """Prints rows under their column names, and title above them unless it is None,
    to file (stdout when None).

    Values are the server's data and are printed as written, never read as rich markup
    (a description "[/link]" would otherwise raise MarkupError or restyle the table),
    with the characters a terminal would act on shown escaped (see `visible`).
    """
    # Imported here: `import cairn` should not pay for rich, which only tables need.
    from rich.console import Console, Group
    from rich.table import Table
    from rich.text import Text

    out = sys.stdout if file is None else file
    shown = functools.partial(_writable, encoding=getattr(out, "encoding", None) or "utf-8")
    # rich sizes stdout to the terminal, or to 80 columns when stdout is piped; a file
    # given is printed 200 wide, so that fewer long values are folded.
    console = Console(file=file, width=None if file is None else 200, markup=False, highlight=False)
    if console.width < len(columns) * NARROWEST_COLUMN:
        # Too narrow for a table: rich would give columns no width, their values unseen.
        _print_records(console, title, [shown(c) for c in columns], rows, shown)
        return
    # The title a line of the console's width, not the table's title, which rich folds
    # to the table's width (a run id split across lines above two narrow columns).
    heading = [] if title is None else [Text(shown(title), overflow="fold")]
    table = Table()
    for column in columns:
        table.add_column(Text(shown(column)), overflow="fold")
    for row in rows:
        table.add_row(*(Text(shown(value)) for value in row))
    console.print(Group(*heading, table))  # one write


# The fewest characters a column of a table takes to show a few of its value's: its
# borders and padding take three.
NARROWEST_COLUMN = 8


def _print_records(
    console: Any,
    title: str | None,
    names: list[str],
    rows: Iterable[Sequence[Any]],
    shown: Callable[[Any], str],
) -> None:
    """Prints each row as its columns' names beside their values (or, where that leaves
    values too little room, each name above its value, indented), a blank line after
    each. A value's lines, its own or folded, stay in its place: none can begin a line
    as a name would (a description "x\nName: other" is not a record of its own)."""
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    beside = console.width >= max(len(name) for name in names) + 2 + NARROWEST_COLUMN
    if title is not None:
        console.print(Text(shown(title)), overflow="fold")
    for row in rows:
        record = Table.grid(padding=(0, 1))
        record.add_column(overflow="fold", no_wrap=beside)
        if beside:
            record.add_column(overflow="fold")
        for name, value in zip(names, row, strict=True):
            label, text = Text(f"{name}:"), Text(shown(value))
            if beside:
                record.add_row(label, text)
            else:
                record.add_row(label)
                record.add_row(Padding(text, (0, 0, 0, 2 if console.width > 4 else 0)))
        console.print(record)
        console.print()


def _writable(value: Any, encoding: str) -> str:
    """A cell as shown (`_cell`), with what encoding lacks as Python's escape ("\\u65e5"):
    escaped before the table is laid out, not as it is written, so that each cell is as
    wide as what is printed of it."""
    text = _cell(value)
    return text.encode(encoding, "backslashreplace").decode(encoding)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return visible(str(value))


# Characters a terminal acts on instead of showing: the C0 controls but newline and tab
# (ESC starts sequences that retitle the window, clear the screen, hide or recolour
# text; CR writes over the line), DEL, the C1 controls (CSI U+009B is ESC [ in one),
# and the bidi overrides and isolates, which show the text after them reordered.
_ACTED_ON = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """text for a terminal: any character it would act on rather than show, as a
    Python escape ("\\x1b", "\\u202e"), so that a value others stored (a tag, a
    description) is seen as written and cannot change what the terminal does."""
    return _ACTED_ON.sub(_escaped, text)


# Tabs and line breaks, which a table's cell keeps and one line of a message must not.
_BREAKS = re.compile("[\t\n\u2028\u2029]")


def on_one_line(text: str) -> str:
    """`visible`, with tabs and line breaks escaped too: for a name quoted in an error's
    message or metadata, which a log keeps as one line."""
    return _BREAKS.sub(_escaped, visible(text))


def _escaped(found: re.Match[str]) -> str:
    code = ord(found.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def millis(value: int | None) -> str | None:
    """A time in milliseconds since the epoch as UTC, to the second."""
    if value is None:
        return None
    moment = datetime.datetime.fromtimestamp(value / 1000, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")
