"""What commands print: tables for people (rich), JSON for scripts.

JSON is an array of objects for a listing and one object for a single thing; field
names are the Python client's attribute names, times are ISO-8601 in UTC
("2026-12-01T04:53:48.123Z"), absent values are null, and a number that is not finite
(a NaN or infinite metric) is the string "NaN", "Infinity" or "-Infinity", as MLflow's
REST API writes it: JSON has no such numbers, and strict parsers (JavaScript's, Go's)
refuse the bare NaN Python would print.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import datetime
import enum
import errno
import io
import json
import math
import os
import signal
import sys
import textwrap
import threading
from collections.abc import AsyncIterable, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeGuard, TypeVar

import click

from .._tables import print_table, visible

TABLE = "table"
JSON = "json"
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
# The most rows of one table of a listing: a page of the server's.
TABLE_ROWS = 1000

# Fields holding milliseconds since the epoch, printed as ISO-8601.
_TIME_FIELDS = frozenset(
    {
        "creation_time",
        "last_update_time",
        "last_updated_timestamp",
        "creation_timestamp",
        "start_time",
        "end_time",
        "timestamp",
        "create_time",
        "update_time",
        "expire_time",
        "revoke_time",
        "create_time_since_epoch",
        "last_update_time_since_epoch",
    }
)

# Attributes the client types hold as "" when the server has none (a run made without
# a user): null in JSON, as every other absent value is. Only attributes of a type, so
# that a tag or param of the same name keeps its empty value.
_ABSENT_WHEN_EMPTY = frozenset({"user_id"})


def output_option(command: F) -> F:
    """`--output table|json` (`-o`)."""
    return click.option(
        "--output",
        "-o",
        type=click.Choice([TABLE, JSON]),
        default=TABLE,
        show_default=True,
        help="a table for people, or JSON for scripts",
    )(command)


def plain(value: Any) -> Any:
    """A client type as JSON-ready values: dicts, lists, strings, numbers, None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # Times by the names of the types' own fields: a map's keys are the caller's
        # (a custom property named "timestamp" is no time).
        return {
            f.name: _field(f.name, _attribute(value, f.name)) for f in dataclasses.fields(value)
        }
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _attribute(value: Any, name: str) -> Any:
    found = getattr(value, name)
    return None if name in _ABSENT_WHEN_EMPTY and found == "" else found


def _field(name: str, value: Any) -> Any:
    if name in _TIME_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        return iso_time(value)
    return plain(value)


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def iso_time(millis: int | None) -> str | int | None:
    """millis since the epoch in ISO-8601, UTC; 0 is the epoch, as the server keeps
    it. A time outside the years 1-9999 (one in nanoseconds, say) stays its number:
    the server keeps any of 64 bits, and one such point must not hide the others."""
    if millis is None:
        return None
    try:  # in integers: millis / 1000 as a float is 1 ms off for many times
        moment = _EPOCH + datetime.timedelta(milliseconds=millis)
    except OverflowError:
        return millis
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def emit_list(
    output: str,
    records: Sequence[Mapping[str, Any]],
    columns: Sequence[tuple[str, str]],
    title: str,
) -> None:
    """Prints records: as a JSON array, or as a table of the columns (key, heading)."""
    listing = Listing(output, columns, title)
    listing.add(records)
    listing.end()


async def emit_pages(
    output: str,
    pages: AsyncIterable[Sequence[T]],
    record: Callable[[T], Mapping[str, Any]],
    columns: Sequence[tuple[str, str]],
    title: str,
) -> None:
    """Prints the items of pages as each page arrives (see Listing), each as record
    makes it: memory holds one page, however long the listing."""
    listing = Listing(output, columns, title)
    async for page in pages:
        listing.add([record(item) for item in page])
    listing.end()


class Listing:
    """A listing printed part by part: a JSON array written element by element, or a
    table a part (of up to TABLE_ROWS rows) at a time, each as wide as its own rows
    need, under the title and headings the first part alone has."""

    def __init__(self, output: str, columns: Sequence[tuple[str, str]], title: str) -> None:
        self.output = output
        self.columns = columns
        self.title = title
        self.printed = 0

    def add(self, records: Sequence[Mapping[str, Any]]) -> None:
        if self.output == JSON:
            self._add_json(records)
            return
        for start in range(0, len(records), TABLE_ROWS):
            self._table(records[start : start + TABLE_ROWS])
            self.printed += len(records[start : start + TABLE_ROWS])

    def end(self) -> None:
        """Closes the array; prints the empty table of a listing that found nothing."""
        if self.output == JSON:
            write_text("[]\n" if not self.printed else "\n]\n")
        elif not self.printed:
            self._table([])

    def _add_json(self, records: Sequence[Mapping[str, Any]]) -> None:
        # As json.dumps(the whole list, indent=2) writes it.
        parts = [",\n" if self.printed or n else "[\n" for n in range(len(records))]
        text = "".join(
            part + textwrap.indent(json_text(record), "  ")
            for part, record in zip(parts, records, strict=True)
        )
        self.printed += len(records)
        write_text(text)

    def _table(self, records: Sequence[Mapping[str, Any]]) -> None:
        rows = [[_cell(record.get(key)) for key, _ in self.columns] for record in records]
        headings = [heading for _, heading in self.columns]
        print_table(self.title if not self.printed else None, headings, rows, file=_table_file())


def emit_object(output: str, record: Mapping[str, Any], title: str) -> None:
    """Prints one record: a JSON object, or a table of its fields and values."""
    if output == JSON:
        write_json(record)
        return
    rows = [(key, _cell(value)) for key, value in record.items()]
    print_table(title, ["Field", "Value"], rows, file=_table_file())


def echo(value: Any) -> None:
    """Prints value as one plain line (an id, a path written): as a table's cells are,
    with the characters a terminal would act on shown escaped. Written to stdout as
    it is (click would write UTF-8 to an ASCII stdout)."""
    write_text(visible(str(value)) + "\n")


def write_json(value: Any) -> None:
    write_text(json_text(value) + "\n")


def json_text(value: Any) -> str:
    # As written, unless stdout cannot encode every character: then \u escapes, the
    # same strict JSON.
    ascii_only = not _is_utf8(getattr(sys.stdout, "encoding", None))
    return json.dumps(_strict(value), indent=2, ensure_ascii=ascii_only, allow_nan=False)


def write_text(text: str) -> None:
    """Writes text to stdout at once: a listing's part is seen before the next is read."""
    sys.stdout.write(text)
    sys.stdout.flush()


class OutputError(click.ClickException):
    """stdout cannot be written (a full disk, a closed stdout): the user's matter, one
    line and status 1, not a bug of ours."""

    def __init__(self, why: str) -> None:
        super().__init__(f"cannot write output: {why}")


class _Stdout(io.TextIOWrapper):
    """stdout, whose failures to write are an OutputError. A reader gone (EPIPE, `|
    head`) stays a BrokenPipeError, which click ends quietly."""

    dropped = False

    def write(self, text: str) -> int:
        if self.dropped:
            return len(text)
        try:
            with _interruptible():
                return super().write(text)
        except BrokenPipeError:
            raise
        except OSError as error:
            raise OutputError(error.strerror or str(error)) from None

    def flush(self) -> None:
        if self.dropped:
            return
        try:
            with _interruptible():
                super().flush()
        except BrokenPipeError:
            raise
        except OSError as error:
            raise OutputError(error.strerror or str(error)) from None


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt in a write, also inside a command's event loop.
    asyncio's handler only cancels its task, which a write blocked on a full pipe (a
    pager that stopped reading) never lets run, as Python retries the interrupted write:
    it took a second Ctrl-C. Raised there alone: raised anywhere in the loop, it was lost
    in gRPC's callbacks, and the command hung or went on."""
    handler = signal.getsignal(signal.SIGINT)
    swapped = _swappable(handler)
    if swapped and _Interrupts.came:
        raise KeyboardInterrupt
    if swapped:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if swapped:
            signal.signal(signal.SIGINT, handler)


class _Interrupts:
    """Whether a Ctrl-C came during the command's event loop, as its handler saw it."""

    came = False


@contextlib.contextmanager
def interrupts_noted() -> Iterator[None]:
    """Notes each Ctrl-C that asyncio's handler takes in the event loop this runs in.
    The handler only cancels the command's task, which learns of it at its next await:
    a write made before that, blocked on a pipe nobody reads, would wait for a reader
    for good. A cancel alone does not say Ctrl-C: a timeout's is no interrupt."""
    handler = signal.getsignal(signal.SIGINT)
    _Interrupts.came = False
    if not _swappable(handler):
        yield
        return

    def noted(number: int, frame: Any) -> None:
        _Interrupts.came = True
        handler(number, frame)

    signal.signal(signal.SIGINT, noted)
    try:
        yield
    finally:
        # asyncio puts the default back only over its own handler, which this is not.
        signal.signal(signal.SIGINT, handler)


def _swappable(handler: Any) -> TypeGuard[Callable[[int, Any], Any]]:
    """Whether handler is one of Python, set in the main thread, that may be stood in
    for: not ignored (nohup), nor set outside Python, nor the default's KeyboardInterrupt."""
    return (
        threading.current_thread() is threading.main_thread()
        and callable(handler)
        and handler is not signal.default_int_handler
    )


class _Closed(io.RawIOBase):
    """What a closed stdout (`>&-`, which Python leaves as None) is written to."""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        raise OSError(errno.EBADF, "stdout is closed")


def guard_stdout() -> None:
    """Makes stdout one whose failures to write are OutputError, and which writes what
    its encoding lacks (an ASCII or Latin-1 locale) as Python's escapes ("\\u65e5")."""
    stream = sys.stdout
    if stream is None:
        sys.stdout = _Stdout(io.BufferedWriter(_Closed()), encoding="utf-8")
        return
    if type(stream) is not io.TextIOWrapper:  # not the interpreter's own: left as it is
        return
    encoding = stream.encoding
    binary = stream.detach()
    # Unbuffered (python -u, PYTHONUNBUFFERED), it is the file itself, whose write may
    # take part of what it is given (a reader gone while a large write waited), and the
    # text layer drops the rest without a word: `runs describe | head -c 100` ended with
    # status 0 and its output cut. A buffered writer writes all or raises; what the CLI
    # writes is flushed as written (write_text), so it still appears at once.
    if isinstance(binary, io.RawIOBase):
        binary = io.BufferedWriter(binary)
    sys.stdout = _Stdout(
        binary,
        encoding=encoding,
        errors=stream.errors if _is_utf8(encoding) else "backslashreplace",
        line_buffering=stream.line_buffering,
        write_through=stream.write_through,
    )


def end_output(status: int | str | None) -> None:
    """Writes what stdout holds yet, at the end of a command that ended with status:
    a failure is the command's (status 1) unless it failed already, and what cannot be
    written is dropped, which Python's own flush at exit would report as a traceback."""
    try:
        sys.stdout.flush()
    except OutputError as error:
        if isinstance(sys.stdout, _Stdout):
            sys.stdout.dropped = True
        if not status:
            error.show()
            sys.exit(error.exit_code)


def drop_output() -> None:
    """Throws away what stdout holds yet: a command interrupted owes its reader nothing
    more, and one that stopped reading (a pager) held the flush at the end, and the
    command with it, after the Ctrl-C had stopped its writes."""
    if isinstance(sys.stdout, _Stdout):
        sys.stdout.dropped = True
    with contextlib.suppress(OSError, ValueError, AttributeError):  # no stdout to speak of
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())  # for the buffer's own flush as Python exits
        os.close(null)


def _is_utf8(encoding: str | None) -> bool:
    try:
        return codecs.lookup(encoding or "ascii").name == "utf-8"
    except LookupError:
        return False


def _strict(value: Any) -> Any:
    """value with every non-finite float as MLflow's string for it."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(item) for item in value]
    return value


def _cell(value: Any) -> Any:
    if isinstance(value, Mapping):
        return ", ".join(f"{_entry(k)}={_entry(_cell(v))}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_entry(_cell(v)) for v in value)
    return value


def _entry(value: Any) -> str:
    """One of the entries a cell lists, quoted as JSON writes a string when it holds
    what sets entries apart: a param "cnn, lr=0.1" showed as two params."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ',="') else text


def _table_file() -> Any:
    # A terminal gets its own width; a pipe or file 200 columns, so few values fold.
    return None if sys.stdout.isatty() else sys.stdout


def is_terminal() -> bool:
    """Whether people watch stdout (progress bars and plots are for them only)."""
    return sys.stdout.isatty()


def in_colour() -> bool:
    """Whether what stdout shows may have colours: a terminal's, unless NO_COLOR is set
    to anything but "" (no-color.org), as rich's tables and progress bars already read it."""
    return is_terminal() and not os.environ.get("NO_COLOR")
