"""`cairn sync`: store what runs could not send during an outage (their local journals)."""

from __future__ import annotations

import click

from ._calls import call
from ._connection import connection_options


@click.command("sync")
@click.argument("path", required=False)
@connection_options
def command(path: str | None) -> None:
    """Send the metrics runs journaled during an outage.

    PATH is a journal file or folder (default ~/.cache/cairn/journal). Each point is
    stored once, however often this runs."""
    sent = call(lambda client: client.tracking.sync_journal(path))
    # Sent, not stored: a point the server held already (sent before the outage under
    # the same request id) is skipped there, and its answer does not say so.
    click.echo(f"sent {sent} points, each stored once")
