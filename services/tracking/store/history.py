"""Metric history: every point of one key of a run, in step order, chunk by chunk.

The points are read through a server-side cursor, so a million points never sit in
the service's memory at once; each chunk becomes one streamed message.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg

from ..model import MetricSeries
from .runs import run_not_found

CHUNK_POINTS = 32_768

_ALL_POINTS = """SELECT value, step, timestamp_ms FROM tracking.metrics
                 WHERE run_id = $1 AND key = $2 ORDER BY step, timestamp_ms"""

# A series longer than max_points is cut into max_points // 4 buckets, and at most 4
# points per bucket: its first, last, smallest and largest. The buckets are
# consecutive runs of points in step order, so the series keeps its first and last
# points and its global minimum and maximum.
_DOWNSAMPLED = """
WITH numbered AS (
    SELECT value, step, timestamp_ms,
           ntile($3) OVER (ORDER BY step, timestamp_ms) AS bucket,
           row_number() OVER (ORDER BY step, timestamp_ms) AS position,
           count(*) OVER () AS total
    FROM tracking.metrics WHERE run_id = $1 AND key = $2
), ranked AS (
    SELECT *,
        row_number() OVER (PARTITION BY bucket ORDER BY position) AS from_start,
        row_number() OVER (PARTITION BY bucket ORDER BY position DESC) AS from_end,
        row_number() OVER (PARTITION BY bucket ORDER BY value, position) AS from_min,
        row_number() OVER (PARTITION BY bucket ORDER BY value DESC, position) AS from_max
    FROM numbered
)
SELECT value, step, timestamp_ms FROM ranked
WHERE total <= $4 OR from_start = 1 OR from_end = 1 OR from_min = 1 OR from_max = 1
ORDER BY position"""


class MetricHistory:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def read(
        self, project: str, run_id: str, key: str, max_points: int
    ) -> AsyncIterator[MetricSeries]:
        """Yields chunks of points; an unknown run is NOT_FOUND, an unknown key empty."""
        run_uuid = uuid.UUID(run_id)
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            exists = await conn.fetchval(
                "SELECT 1 FROM tracking.runs WHERE project = $1 AND run_id = $2",
                project,
                run_uuid,
            )
            if exists is None:
                raise run_not_found(run_id)
            if max_points:
                cursor = await conn.cursor(_DOWNSAMPLED, run_uuid, key, max_points // 4, max_points)
            else:
                cursor = await conn.cursor(_ALL_POINTS, run_uuid, key)
            while rows := await cursor.fetch(CHUNK_POINTS):
                yield _columns(key, rows)


def _columns(key: str, rows: list[asyncpg.Record]) -> MetricSeries:
    return MetricSeries(
        key=key,
        values=[r[0] for r in rows],
        steps=[r[1] for r in rows],
        timestamps_ms=[r[2] for r in rows],
    )
