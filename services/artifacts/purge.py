"""Garbage collection's artifacts step: deletes the objects under the locations other
services let go of (`operations/queue.py`) whose uploads began no later than they were
let go of, and ends the uploads under them begun by then; the janitor removes their
bytes. What is written there since is a reuse's, and stays; but under a closed location
(a run's directory, which no owner takes again) everything goes: no upload is taken
there from its queueing on (`uploads.check_open`), and the drain keeps it closed
(`artifacts.closed_locations`) once it leaves the queue.

It runs in a garbage collection received by a server hosting the artifacts service,
and in that service's background work every CAIRN_ARTIFACT_JANITOR_INTERVAL_SECONDS,
so locations queued by a tracking server running elsewhere are drained too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from ..common import logs
from ..common.service import Purge, Resources
from ..common.sql import like_prefix
from ..operations import queue
from .janitor import Janitor, janitor_for, run_janitor
from .publication import PUBLISHES_OF_PROJECT

# Objects unpublished per transaction.
BATCH = 1000
_log = logs.get("cairn.artifacts.purge")


@dataclass
class Drained:
    locations: int = 0
    objects: int = 0
    bytes: int = 0
    # The id of a location left queued for an upload a completion holds, which the
    # rest of this drain passes over (see `_drain_one`).
    kept: int | None = None

    def add(self, other: Drained) -> None:
        self.locations += other.locations
        self.objects += other.objects
        self.bytes += other.bytes


async def purge(resources: Resources, gc: Purge) -> None:
    async with resources.pool.acquire() as conn:
        await gc.plan(await queue.pending(conn))
    for kind in ("artifact_locations", "artifact_objects", "artifact_bytes"):
        await gc.done(kind, 0, progress=0)
    janitor = janitor_for(resources)
    async for drained in _batches(resources.pool):
        # Counted as each batch commits, not at the end: an attempt cut short after a
        # batch leaves it to no takeover, which finds those objects gone.
        await gc.done("artifact_objects", drained.objects, progress=0)
        await gc.done("artifact_bytes", drained.bytes, progress=0)
        await gc.done("artifact_locations", drained.locations)
        await janitor.collect_garbage()


async def background(resources: Resources) -> None:
    """The artifacts service's work beside its calls: the janitor, and draining the
    queue of discarded locations."""
    await asyncio.gather(run_janitor(resources), _drain_forever(resources))


async def _drain_forever(resources: Resources) -> None:
    interval = resources.config.artifact_janitor_interval_seconds
    if interval <= 0:
        return
    janitor = janitor_for(resources)
    while True:
        try:
            await drain(resources.pool, janitor)
        except Exception:
            _log.exception("draining discarded locations failed")
        await asyncio.sleep(interval)


async def drain(pool: asyncpg.Pool, janitor: Janitor) -> Drained:
    """Deletes the objects under every queued location and removes their bytes."""
    drained = Drained()
    async for batch in _batches(pool):
        drained.add(batch)
        await janitor.collect_garbage()
    if drained.locations or drained.objects:
        _log.info(
            "discarded locations drained",
            locations=drained.locations,
            objects=drained.objects,
            bytes=drained.bytes,
        )
    return drained


async def _batches(pool: asyncpg.Pool) -> AsyncIterator[Drained]:
    """What each batch of one pass over the queue drained, as it commits."""
    after = 0
    while (batch := await _drain_one(pool, after)) is not None:
        after = batch.kept or after
        yield batch


async def _drain_one(pool: asyncpg.Pool, after: int) -> Drained | None:
    """Ends the uploads under the oldest queued location past id `after` begun no later
    than it was queued, unpublishes up to BATCH objects whose uploads began by then
    (their keys become garbage), and takes it off the queue once none is left; what
    went (one location when it was taken off), or None when the queue is empty.

    An upload a completion holds is left to it (its bytes are being read back): the
    location then stays queued, for a later drain to remove what it publishes. Under a
    closed location every upload and object goes, whenever begun, and the location is
    closed for good in the first batch's transaction."""
    async with pool.acquire() as conn, conn.transaction():
        location = await queue.take(conn, after)
        if location is None:
            return None
        # Publishes under way commit first, or an object one inserted before the
        # location was queued would be invisible to the DELETE and kept for ever.
        await conn.execute(
            f"SELECT pg_advisory_xact_lock({PUBLISHES_OF_PROJECT})", location.project
        )
        under = (location.project, location.path, like_prefix(location.path + "/"))
        cutoff = None if location.closed else location.queue_time  # None: whenever begun
        if location.closed:  # before it is emptied: nothing published under it after
            await conn.execute(_CLOSE, location.project, location.path)
        await conn.execute(_END_UPLOADS_BEGUN_BEFORE, *under, cutoff)
        row = await conn.fetchrow(_UNPUBLISH_OLD, *under, cutoff, BATCH)
        drained = Drained(objects=row["objects"], bytes=row["bytes"])
        if row["picked"] == BATCH:
            return drained  # more to come, in the next batch
        if await conn.fetchval(_HELD_UPLOADS, *under, cutoff):
            drained.kept = location.id
        else:
            await queue.done(conn, location)
            drained.locations = 1
    return drained


_CLOSE = """INSERT INTO artifacts.closed_locations (project, path) VALUES ($1, $2)
            ON CONFLICT DO NOTHING"""

# The cut-off $4 of the statements below, NULL for a closed location: no time.
_BY_CUTOFF = "coalesce($4::timestamptz, 'infinity')"

# An upload begun under the location before it was let go of is the old owner's, like
# the objects it would write: were it to publish after the drain, the location would be
# off the queue and its object kept for ever. Its row goes, as an expiry
# takes it (`ObjectStore.expire_uploads`), so its publish is refused UPLOAD_EXPIRED
# (LOCATION_DELETED under a closed location, which its publish checks first).
# One a completion holds is left to its completion (its bytes are being read back),
# and the location stays queued for what it publishes (`_drain_one`).
_END_UPLOADS_BEGUN_BEFORE = f"""
WITH gone AS (
    DELETE FROM artifacts.uploads
    WHERE project = $1 AND (path = $2 OR path LIKE $3) AND create_time <= {_BY_CUTOFF}
      AND (completing_until IS NULL OR completing_until < clock_timestamp())
    RETURNING storage_key
)
INSERT INTO artifacts.garbage (storage_key) SELECT storage_key FROM gone
ON CONFLICT DO NOTHING"""

# What _END_UPLOADS_BEGUN_BEFORE left under the location: uploads begun before it was
# let go of that a completion holds.
_HELD_UPLOADS = f"""
SELECT EXISTS (
    SELECT 1 FROM artifacts.uploads
    WHERE project = $1 AND (path = $2 OR path LIKE $3) AND create_time <= {_BY_CUTOFF}
)"""

# An object is the old owner's when the upload that wrote it began no later than the
# location was let go of, though it published after (0011; before that column, its
# update_time stands in). The age condition is on the deleted row itself, not only in
# the selection: a row an overwrite is committing when the DELETE reaches it is
# re-checked in its new version (READ COMMITTED's recheck), against the target's
# conditions only, and must then be kept. Whether more may be left is told by the rows
# selected, not by those deleted, which such a recheck can make fewer.
_BEGUN = "coalesce(o.upload_begin_time, o.update_time)"
_UNPUBLISH_OLD = f"""
WITH picked AS (
    SELECT path FROM artifacts.objects o
    WHERE project = $1 AND (path = $2 OR path LIKE $3) AND {_BEGUN} <= {_BY_CUTOFF}
    LIMIT $5
), gone AS (
    DELETE FROM artifacts.objects o
    WHERE o.project = $1 AND {_BEGUN} <= {_BY_CUTOFF} AND o.path IN (SELECT path FROM picked)
    RETURNING storage_key, size
), condemned AS (
    INSERT INTO artifacts.garbage (storage_key)
    SELECT storage_key FROM gone ON CONFLICT DO NOTHING
)
SELECT (SELECT count(*) FROM picked) AS picked, count(*) AS objects,
       coalesce(sum(size), 0) AS bytes
FROM gone"""
