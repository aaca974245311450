"""`cairn sync`: store what runs could not send during an outage (their local journals)."""

from __future__ import annotations

from pathlib import Path

import click

from .._client import Client
from .._clients import journal
from .._tables import visible
from ._calls import PartlyDone, call
from ._connection import connection_options


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
    click.echo(f"sent {sent} points, each stored once")


async def _replay(client: Client, path: str | None) -> int:
    """The points sent, as sync_journal stores them; the files not stored are one
    error, the first's, naming them and what was sent, rather than the library's
    warnings (a line each) before it."""
    if path is None and not journal.default_directory().exists():
        return 0  # no run ever needed a journal
    folder = Path(path) if path else journal.default_directory()
    replayed = await journal.replay_each(client.tracking, folder)
    if not replayed.failures:
        return replayed.sent
    files = [visible(str(file)) for file, _ in replayed.failures]
    kept = files[0] if len(files) == 1 else f"{files[0]} and {len(files) - 1} more"
    raise PartlyDone(
        replayed.failures[0][1],
        f"sent {replayed.sent} points; not stored, kept to sync again: {kept}",
    )
