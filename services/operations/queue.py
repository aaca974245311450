"""The hand-off of artifact locations from the services that let go of them to the
artifacts service, which deletes what lies under them, wherever it runs.

A location is queued in the transaction that removed the rows referring to it, so it
is queued exactly when they are gone; the artifacts service takes it off the queue in
the transaction that unpublishes the objects under it. Only objects whose uploads began
no later than the location was queued go: a location reused since (a new experiment
given the same artifact location) keeps what was written there after. A closed location
(a run's directory, which no owner takes again) loses everything under it, and nothing
is written there after.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import asyncpg

ARTIFACT_SCHEME = "cairn-artifacts"


@dataclass(frozen=True)
class Location:
    id: int
    project: str
    path: str
    # When it was let go of: objects whose uploads began under it since are another
    # owner's.
    queue_time: datetime
    # Whether no owner takes it again: everything under it goes, whenever it was written.
    closed: bool = False


def parse(location: str) -> tuple[str, str] | None:
    """(project, path) of "cairn-artifacts://<project>/<path>"; None for a location
    elsewhere (another store's, which Cairn never deletes) or for a whole project."""
    parts = urlsplit(location)
    path = parts.path.strip("/")
    if parts.scheme != ARTIFACT_SCHEME or not parts.netloc or not path:
        return None
    return parts.netloc, path


async def enqueue(conn: asyncpg.Connection, locations: list[str], closed: bool = False) -> int:
    """Queues the locations in Cairn's artifact service; returns how many."""
    parsed = [p for p in map(parse, locations) if p is not None]
    if parsed:
        await conn.executemany(
            """INSERT INTO operations.discarded_locations (project, path, closed)
               VALUES ($1, $2, $3)""",
            [(project, path, closed) for project, path in parsed],
        )
    return len(parsed)


async def pending(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval("SELECT count(*) FROM operations.discarded_locations")
    return count


async def take(conn: asyncpg.Connection, after: int = 0) -> Location | None:
    """The oldest queued location past id `after` no other transaction is working on,
    locked until conn's transaction ends (it deletes it with `done` when its objects
    are gone)."""
    row = await conn.fetchrow(
        """SELECT id, project, path, queue_time, closed FROM operations.discarded_locations
           WHERE id > $1 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED""",
        after,
    )
    return None if row is None else Location(**dict(row))


async def done(conn: asyncpg.Connection, location: Location) -> None:
    await conn.execute("DELETE FROM operations.discarded_locations WHERE id = $1", location.id)
