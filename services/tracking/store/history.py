"""Metric history: every point of one key of a run, in step order, chunk by chunk.

Points are stored as chunks, each sorted by (step, timestamp). When the chunks' step
ranges do not overlap (the usual case: steps grow as training goes on) they are sent
one after the other as they are; otherwise PostgreSQL merges them in one sorted
query. Both read through a server-side cursor, so a million points never sit in the
service's memory at once.

The whole history is one snapshot (a REPEATABLE READ transaction), so it holds a pool
connection until its last message is taken, i.e. for as long as its client takes to
read. Two bounds keep readers from holding the database: the stream ends once its
client has taken no message for `stall_seconds` (STREAM_STALLED), and histories hold
at most half the pool's connections at once, and with searches of runs the pool but a
quarter (common/read_slots.py), so readers, however slow, never take the connections
every other call needs. Reading in pieces, each on a
connection of its own, would free the connection between messages, but neither keeps
one snapshot: compaction replaces chunks by new ones meanwhile (a keyset over chunk ids
would skip or repeat their points), and the merged and downsampled reads order or
number the points of the whole series.

A merged or downsampled read sorts a run's points in one statement before it sends the
first, which the client cannot pace. The statement timeout bounds each; a bulk read of
many runs gets that timeout once for all its sorts together (`_SortBudget`), so one
request costs at most the time one statement may.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Iterator, Sequence

import asyncpg

from ...common.database import statement_timeout, unreachable
from ...common.errors import ResourceExhausted
from ...common.read_slots import HISTORIES, ReadSlots
from ..model import MetricSeries
from .compaction import IN_ORDER
from .runs import UNCLAIMED, run_not_found

# Points per streamed message: about 700 KiB of packed columns.
CHUNK_POINTS = 32_768

# Whether the chunks' step ranges are disjoint, and about how many points each holds,
# in their order: a float8 array is a 24-byte header and 8 bytes a value, and
# pg_column_size reads a value stored out of line from its pointer, not its bytes.
_CHUNKS_DISJOINT = """
SELECT coalesce(bool_and(prev_max IS NULL OR min_step > prev_max), TRUE),
       coalesce(array_agg(points ORDER BY min_step, chunk_id), '{}')
FROM (
    SELECT min_step, chunk_id, lag(max_step) OVER (ORDER BY min_step, chunk_id) AS prev_max,
           greatest((pg_column_size("values") - 24) / 8, 1) AS points
    FROM tracking.metric_chunks WHERE run_id = $1 AND key = $2
) ranges"""

_CHUNKS_IN_ORDER = """
SELECT "values", steps, timestamps_ms FROM tracking.metric_chunks
WHERE run_id = $1 AND key = $2 ORDER BY min_step, chunk_id"""

# Each point with what places it among those equal to it (compaction.IN_ORDER).
_POINTS = """
SELECT p.value, p.step, p.ts, c.chunk_id, p.n FROM tracking.metric_chunks c,
    unnest(c."values", c.steps, c.timestamps_ms) WITH ORDINALITY AS p(value, step, ts, n)
WHERE c.run_id = $1 AND c.key = $2"""

# In the order a chunk stores its points (chunk_layout.py, write_statements.py,
# compaction.py), so a history reads the same from chunks merged as it read from the
# chunks apart.
_ALL_POINTS_SORTED = f"SELECT value, step, ts FROM ({_POINTS}) p ORDER BY {IN_ORDER}"

# How many points a series holds: its values arrays' lengths, read without the other
# two arrays.
_POINT_COUNT = """
SELECT coalesce(sum(cardinality("values")), 0) FROM tracking.metric_chunks
WHERE run_id = $1 AND key = $2"""

# A series longer than max_points is cut into max_points // 4 buckets of consecutive
# points, and each bucket keeps at most 4: its first, last, smallest and largest. So
# the result keeps the series' first and last points and its minimum and maximum.
# One sort numbers the points; the rest is two passes of hash aggregation (a bucket's
# bounds and extremes, then the first point holding each extreme): ranking each bucket
# by window functions sorted every point five times, and took 5 times a full read.
# PostgreSQL sorts NaN above every number: the largest is looked for among numbers, so
# a NaN does not hide a bucket's peak.
_DOWNSAMPLED = f"""
WITH numbered AS MATERIALIZED (
    SELECT value, step, ts, position, total, position * $3 / total AS bucket FROM (
        SELECT value, step, ts,
               row_number() OVER (ORDER BY {IN_ORDER}) - 1 AS position,
               count(*) OVER () AS total
        FROM ({_POINTS}) AS p
    ) p
), bounds AS (
    SELECT bucket, min(position) AS first, max(position) AS last, min(value) AS low,
           max(value) FILTER (WHERE value <> 'NaN') AS high
    FROM numbered GROUP BY bucket
), kept AS (
    SELECT unnest(ARRAY[
        min(n.position) FILTER (WHERE n.value = b.low),
        min(n.position) FILTER (WHERE n.value = b.high), b.first, b.last
    ]) AS position
    FROM numbered n JOIN bounds b USING (bucket)
    GROUP BY n.bucket, b.first, b.last
)
SELECT value, step, ts FROM numbered
WHERE total <= $4 OR position IN (SELECT position FROM kept)
ORDER BY position"""


class MetricHistory:
    """Reads of metric histories from pool, each ended once its client has taken no
    message for stall_seconds; each takes a turn of the long reads (read_slots.py)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        stall_seconds: float,
        slots: ReadSlots,
        sort_seconds: float = 0.0,
    ) -> None:
        self._pool = pool
        self._sort_seconds = sort_seconds  # for all sorts of one read; 0: no bound
        self._stall = stall_seconds
        self._slots = slots

    async def taken(self, sending: Awaitable[None]) -> None:
        """Awaits the client taking one message of a read, at most the stall bound.

        Raises:
            ResourceExhausted: the client took nothing meanwhile (STREAM_STALLED); the
                caller ends the stream, which frees its connection.
        """
        try:
            # Not wait_for: on 3.11 it turns the call's cancellation (its client gone)
            # into the failed write's error when both come at once.
            async with asyncio.timeout(self._stall):
                await sending
        except TimeoutError:
            raise ResourceExhausted(
                "STREAM_STALLED",
                f"the client took no message of the metric history within {self._stall:g} s "
                "(CAIRN_STREAM_STALL_SECONDS) while it held a database connection; read "
                "the stream as it arrives, or ask for fewer points (max_points)",
            ) from None

    async def read(
        self, project: str, run_ids: Sequence[str], key: str, max_points: int
    ) -> AsyncGenerator[tuple[str, MetricSeries], None]:
        """Yields each run's points as (run id, a run of points), run after run, each
        run's in step order, all in one snapshot. One reader's slot is held throughout,
        so a read of several runs never waits for one after it has begun to answer. An
        unknown run is NOT_FOUND, and a read that found every reader's slot taken
        throughout the pool's acquire timeout is UNAVAILABLE (DATABASE_BUSY), as a wait
        for a connection is."""
        async with self._slots.turn(HISTORIES), self._pool.acquire() as conn, _snapshot(conn):
            await _check_runs(conn, project, run_ids)  # before a point is sent
            sorts = _SortBudget(conn, self._sort_seconds)
            for run_id in run_ids:
                async for series in _run_history(conn, run_id, key, max_points, sorts):
                    yield run_id, series


@contextlib.asynccontextmanager
async def _snapshot(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """A read-only REPEATABLE READ transaction on conn, for a body that reads.

    It commits once the body took every row, after the stream's last message was
    written. The COMMIT of a transaction that wrote nothing changes nothing, so a
    connection lost there leaves the answer whole and the read ends well: failed, its
    stream, which no client retries after a message came, was UNAVAILABLE after every
    point. A lost connection is closed, and the pool replaces it rather than lend it
    again. A body that fails, before it read every row, fails the read."""
    read_all = False
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            yield
            read_all = True
    except Exception as error:
        if not read_all or unreachable(error) is None:
            raise


async def _check_runs(conn: asyncpg.Connection, project: str, run_ids: Sequence[str]) -> None:
    """NOT_FOUND for the first of run_ids the project does not hold, or a garbage
    collection claimed (runs.UNCLAIMED): the snapshot would read part of its history."""
    found = await conn.fetchval(
        f"""SELECT coalesce(array_agg(r.run_id), '{{}}') FROM tracking.runs r
            WHERE r.project = $1 AND r.run_id = ANY($2::uuid[]) AND {UNCLAIMED}""",
        project,
        [uuid.UUID(run_id) for run_id in run_ids],
    )
    held = {run_id.hex for run_id in found}
    for run_id in run_ids:
        if uuid.UUID(run_id).hex not in held:
            raise run_not_found(run_id)


class _SortBudget:
    """The time the sorts of one read may take together: each sort's statement gets
    what the ones before it left (SET LOCAL statement_timeout, in the read's
    transaction, then back to the pool's for the rest); past that the read is
    RESOURCE_EXHAUSTED (STATEMENT_TIMEOUT), as one statement past the timeout is."""

    def __init__(self, conn: asyncpg.Connection, seconds: float) -> None:
        self._conn = conn
        self._whole = seconds if seconds > 0 else math.inf  # the pool's own timeout
        self._left = self._whole

    async def sorted_rows(self, key: str, query: str, *args: object) -> AsyncIterator[MetricSeries]:
        if self._left <= 0:
            raise statement_timeout()
        limited = self._left < self._whole  # a first sort has the pool's timeout already
        if limited:  # whole milliseconds, one at least: 0 would lift the timeout
            await self._set_timeout(str(max(1, math.ceil(self._left * 1000))))
        started = time.monotonic()
        rows = _point_rows(self._conn, key, query, *args)
        first = await anext(rows, None)  # the sort runs before the first row comes
        self._left -= time.monotonic() - started
        if limited:
            await self._set_timeout("DEFAULT")
        if first is not None:
            yield first
            async for series in rows:
                yield series

    async def _set_timeout(self, value: str) -> None:
        await self._conn.execute(f"SET LOCAL statement_timeout TO {value}")


async def _run_history(
    conn: asyncpg.Connection, run_id: str, key: str, max_points: int, sorts: _SortBudget
) -> AsyncIterator[MetricSeries]:
    run_uuid = uuid.UUID(run_id)
    # A series within max_points is read whole, as without it: numbering and bucketing
    # every point only to keep them all took 2.4 times as long (make bench-tracking).
    if max_points and await conn.fetchval(_POINT_COUNT, run_uuid, key) > max_points:
        rows = sorts.sorted_rows(key, _DOWNSAMPLED, run_uuid, key, max_points // 4, max_points)
    elif (chunks := await conn.fetchrow(_CHUNKS_DISJOINT, run_uuid, key))[0]:
        rows = _stored_chunks(conn, key, run_uuid, chunks[1])
    else:
        rows = sorts.sorted_rows(key, _ALL_POINTS_SORTED, run_uuid, key)
    async for series in rows:
        yield series


async def _stored_chunks(
    conn: asyncpg.Connection, key: str, run_id: uuid.UUID, points: Sequence[int]
) -> AsyncIterator[MetricSeries]:
    """The stored chunks in order, cut and merged into messages of CHUNK_POINTS points
    (the last one fewer), which a server given the least message size still sends: a
    stored chunk holds up to a LogBatch's 100,000 points of one key.

    points: about how many each chunk holds. Each fetch takes the rows of about a
    message (one at least), so a stalled reader holds that and one stored chunk at
    most, not a fixed number of rows of any size (eight of the largest were 100 MB)."""
    cursor = await conn.cursor(_CHUNKS_IN_ORDER, run_id, key)
    pending = MetricSeries(key, [], [], [])
    for wanted in _fetches(points):
        for values, steps, timestamps in await cursor.fetch(wanted):
            pending.values.extend(values)
            pending.steps.extend(steps)
            pending.timestamps_ms.extend(timestamps)
            while len(pending.values) >= CHUNK_POINTS:
                message, pending = _split(pending, CHUNK_POINTS)
                yield message
    if pending.values:
        yield pending


def _fetches(points: Sequence[int]) -> Iterator[int]:
    """How many rows each fetch takes, given each row's points: those that hold at most
    CHUNK_POINTS together, one at least."""
    rows = held = 0
    for count in points:
        if rows and held + count > CHUNK_POINTS:
            yield rows
            rows = held = 0
        rows, held = rows + 1, held + count
    if rows:
        yield rows


def _split(series: MetricSeries, count: int) -> tuple[MetricSeries, MetricSeries]:
    """The first count points of series, and the rest."""
    head = MetricSeries(
        series.key, series.values[:count], series.steps[:count], series.timestamps_ms[:count]
    )
    rest = MetricSeries(
        series.key, series.values[count:], series.steps[count:], series.timestamps_ms[count:]
    )
    return head, rest


async def _point_rows(
    conn: asyncpg.Connection, key: str, query: str, *args: object
) -> AsyncIterator[MetricSeries]:
    cursor = await conn.cursor(query, *args)
    while rows := await cursor.fetch(CHUNK_POINTS):
        yield MetricSeries(
            key=key,
            values=[r[0] for r in rows],
            steps=[r[1] for r in rows],
            timestamps_ms=[r[2] for r in rows],
        )
