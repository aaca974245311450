"""The root of the `cairn` command: its group of every command group (a module of this
package each), and `run`, what the console script (`cairn.cli.main`) does once loaded."""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import click

from .._tables import visible
from . import (
    _server,
    artifacts,
    experiments,
    keys,
    metrics,
    models,
    operations,
    projects,
    runs,
    sync,
)
from ._connection import connection_options
from ._output import drop_output, end_output, guard_stdout


def _version() -> str:
    try:
        return importlib.metadata.version("cairn")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "unknown"


# The status a shell gives a command SIGINT stopped (128 + 2).
INTERRUPTED = 130


class _Cairn(click.Group):
    """The root group: a command interrupted (Ctrl-C) ends with INTERRUPTED, where
    click's "Aborted!" and status 1 read as a call that failed."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            drop_output()
            click.echo(err=True)  # ends the line the terminal's ^C is on
            ctx.exit(INTERRUPTED)


@click.group(
    cls=_Cairn,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(_version(), "--version", prog_name="cairn", message="%(prog)s %(version)s")
@connection_options
def cli() -> None:
    """Cairn ML metadata platform.

    Connection: flags (here or after any command), then CAIRN_* variables, then a
    profile (--profile, CAIRN_PROFILE, else [default] of the file $CAIRN_PROFILES
    names, which must be there, or of ~/.config/cairn/profiles.ini), then
    127.0.0.1:50051.
    """


for _command in (
    *_server.COMMANDS,
    experiments.group,
    runs.group,
    metrics.group,
    artifacts.group,
    models.group,
    projects.group,
    keys.group,
    operations.gc,
    operations.group,
    sync.command,
):
    cli.add_command(_command)


def run(argv: Sequence[str] | None = None) -> None:
    """Runs one command and exits with its status."""
    warnings.showwarning = _one_line
    args = sys.argv[1:] if argv is None else argv
    # The server's commands judge their own arguments and read no client setting.
    of_server = bool(args) and args[0] in _server.NAMES
    if not of_server and (problem := _not_utf8(args)):
        click.UsageError(problem).show()
        sys.exit(click.UsageError.exit_code)
    guard_stdout()
    try:
        _run(argv)
    except KeyboardInterrupt:  # after the command: as its last output was written
        drop_output()
        click.echo(err=True)  # ends the line the terminal's ^C is on
        sys.exit(INTERRUPTED)


def _run(argv: Sequence[str] | None) -> None:
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="cairn")
    except SystemExit as ending:  # click's, always
        end_output(ending.code)
        raise
    except Exception as error:  # a bug of ours: still one line, not a traceback
        click.echo(f"Error: unexpected {type(error).__name__}: {visible(str(error))}", err=True)
        sys.exit(1)


# What Python makes of bytes that are no UTF-8 in an argument or a variable (PEP 383):
# lone surrogates, which no request can carry, so the call failed with a codec's words.
_UNDECODED = re.compile("[\ud800-\udfff]")


def _not_utf8(argv: Sequence[str]) -> str | None:
    """Which argument (shown as its bytes: 'caf\\xe9') or CAIRN_* variable (by its
    name: it may be a key) is not UTF-8 text; None when all are."""
    for number, argument in enumerate(argv, start=1):
        if _UNDECODED.search(argument):
            given = argument.encode("utf-8", "surrogateescape")
            shown = visible(given.decode("utf-8", "backslashreplace"))
            return f"argument {number} ('{shown}') is not UTF-8 text"
    for name, value in os.environ.items():
        if name.startswith("CAIRN_") and _UNDECODED.search(value):
            return f"{name} is not UTF-8 text"
    return None


def _one_line(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """A warning as a person reads it (a profile file others may read, say), without the
    source file and line of Python's format."""
    click.echo(f"Warning: {visible(str(message))}", err=True)
