"""`cairn sync`: store what runs could not send during an outage (their local journals)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from .._client import Client
from .._clients import journal
from .._tables import visible
from ._calls import PartlyDone, call
from ._connection import connection_options
from ._output import echo


@click.command("sync")
@click.argument("path", required=False)
@connection_options
def command(path: str | None) -> None:
    """Send the metrics runs journaled during an outage.

    PATH is a journal file or folder (default ~/.cache/cairn/journal). Each point is
    stored once, however often this runs."""
    sent = call(lambda client: _replay(client, path))
    # Sent, not stored: a point the server held already (sent before the outage under
    # the same request id) is skipped there, and its answer does not say so.
    echo(f"sent {sent} points, each stored once")


async def _replay(client: Client, path: str | None) -> int:
    """The points sent, as sync_journal stores them; the files not stored are one
    error, the first's, naming them and what was sent, rather than the library's
    warnings (a line each) before it. Files stored that could not be removed fail the
    command too, in the same line: each later sync would send them again, and once the
    server forgets their batches' request ids (30 days), store them twice."""
    if path is None and not journal.default_directory().exists():
        return 0  # no run ever needed a journal
    replayed = await journal.replay_each(client.tracking, journal.sync_path(path))
    if not replayed.failures and not replayed.not_removed:
        return replayed.sent
    done = f"sent {replayed.sent} points"
    if replayed.failures:
        done += f"; not stored, kept to sync again: {_named(replayed.failures)}"
    if replayed.not_removed:
        done += f"; stored but not removed, remove by hand: {_named(replayed.not_removed)}"
    if replayed.failures:
        raise PartlyDone(replayed.failures[0][1], done)
    error = replayed.not_removed[0][1]  # its file is named below, with the others
    raise click.ClickException(f"a journal stored could not be removed: {error.strerror}; {done}")


def _named(files: Sequence[tuple[Path, object]]) -> str:
    """The first file, and how many more."""
    first = visible(str(files[0][0]))
    return first if len(files) == 1 else f"{first} and {len(files) - 1} more"
