"""`cairn gc` and `cairn operations list|get|wait`: garbage collection, and following
long-running operations (global admins)."""

from __future__ import annotations

import datetime
import re
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import click

from .._client import Client
from ..types import Operation, OperationState
from ._calls import call, pages
from ._connection import connection_options
from ._output import JSON, emit_object, emit_pages, iso_time, output_option, plain

COLUMNS = [
    ("name", "Operation"),
    ("kind", "Kind"),
    ("state", "State"),
    ("progress", "Progress"),
    ("create_time", "Created"),
    ("end_time", "Ended"),
]
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


class Duration(click.ParamType):
    """A span such as 30d, 12h, 90m, 45s or 2w (0 alone means no margin at all)."""

    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> datetime.timedelta:
        if isinstance(value, datetime.timedelta):
            return value
        text = str(value).strip().lower()
        if text == "0":
            return datetime.timedelta(0)
        found = _DURATION.fullmatch(text)
        if found is None:
            self.fail(f"{value!r} is not a duration such as 30d, 12h, 90m, 45s or 2w", param, ctx)
        number, unit = found.groups()
        try:
            return datetime.timedelta(seconds=float(number) * _UNITS[unit])
        except OverflowError:
            self.fail(f"{value!r} is longer than a duration can be", param, ctx)


@click.command("gc")
@click.option(
    "--older-than",
    required=True,
    type=Duration(),
    help="remove what was deleted longer ago than this, e.g. 30d, 12h, 0",
)
@click.option("--wait", is_flag=True, help="wait until it is done, with a progress bar")
@output_option
@connection_options
def gc(older_than: datetime.timedelta, wait: bool, output: str) -> None:
    """Remove for good the experiments and runs deleted longer ago than --older-than,
    with their metrics, params and artifacts, and prune expired request ids.

    Prints the operation it started; with --wait, the operation once done (exit status
    1 when it failed).
    """

    async def work(client: Client) -> Operation:
        started = await client.operations.start_garbage_collection(older_than)
        if not wait:
            return started
        return await _wait(client, started.name, None, show_bar=output != JSON)

    _emit_outcome(output, call(work))


@click.group("operations")
def group() -> None:
    """Long-running operations (garbage collection): list, read and wait for them."""


@group.command("list")
@click.option("--max-results", type=click.IntRange(min=1), help="stop after this many")
@output_option
@connection_options
def list_operations(max_results: int | None, output: str) -> None:
    """List operations, newest first."""

    async def work(client: Client) -> None:
        listed = pages(client.operations.list_operations(), max_results)
        await emit_pages(output, listed, _record, COLUMNS, "Operations")

    call(work)


@group.command("get")
@click.argument("name")
@output_option
@connection_options
def get_operation(name: str, output: str) -> None:
    """Show an operation: state, progress, what it removed, errors."""
    _emit(output, call(lambda client: client.operations.get_operation(name)))


@group.command("wait")
@click.argument("name")
@click.option("--max-wait", type=Duration(), help="give up after this long, e.g. 10m")
@output_option
@connection_options
def wait_operation(name: str, max_wait: datetime.timedelta | None, output: str) -> None:
    """Wait until an operation is done, with a progress bar; exit status 1 when it
    failed or --max-wait passed first."""
    seconds = None if max_wait is None else max_wait.total_seconds()
    _emit_outcome(
        output, call(lambda client: _wait(client, name, seconds, show_bar=output != JSON))
    )


# How often the bar asks the server: often enough to move smoothly.
BAR_REPORT_SECONDS = 1.0


async def _wait(client: Client, name: str, timeout: float | None, show_bar: bool) -> Operation:
    with _bar(show_bar) as update:
        return await client.operations.wait_operation(
            name, timeout, on_progress=update, report_every=BAR_REPORT_SECONDS
        )


def _bar(show: bool) -> AbstractContextManager[Callable[[Operation], None] | None]:
    """A rich progress bar on stderr when people watch it; else nothing (the result is
    printed once at the end all the same)."""
    if not (show and sys.stderr.isatty()):
        return nullcontext(None)
    return _RichBar()


class _RichBar:
    def __enter__(self) -> Callable[[Operation], None]:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("starting", total=None)
        return self._update

    def _update(self, operation: Operation) -> None:
        total = operation.progress_total or None
        self._progress.update(
            self._task,
            description=operation.state.value.lower(),
            completed=operation.progress_done,
            total=total,
        )

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


def _emit(output: str, operation: Operation) -> None:
    emit_object(output, _record(operation), operation.name)


def _emit_outcome(output: str, operation: Operation) -> None:
    """What a wait for the operation prints, exiting 1 when it failed: `get` only reads
    one, and a failed read must not look like a failed operation, nor one like it."""
    _emit(output, operation)
    if operation.state is OperationState.FAILED:
        raise click.exceptions.Exit(1)


def _record(operation: Operation) -> dict[str, Any]:
    record: dict[str, Any] = plain(operation)
    record["progress"] = f"{operation.progress_done}/{operation.progress_total}"
    record["older_than"] = (
        None if operation.older_than is None else operation.older_than.total_seconds()
    )
    record["cutoff_time"] = iso_time(operation.cutoff_time)
    return record
