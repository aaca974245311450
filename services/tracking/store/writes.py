"""Writing to a run: batches of metrics, params and tags, tag deletes and inputs.

`log_batch` is the one write path: LogMetric, LogParam and SetTag are batches of one.
A batch runs in one transaction, so it lands whole or not at all, and a batch with a
request id records that id in the same transaction, so a retry is applied once. A
small batch of metrics alone without a request id (LogMetric) is one SQL statement
(and, now and then, a second that merges the small chunks such writes leave behind:
compaction.py).
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence

import asyncpg
import numpy as np

from ...common.errors import FailedPrecondition, NotFound
from ..model import Batch, MetricColumns, RunInput
from . import compaction, pgcopy
from .runs import check_writable, lock_writable


class RunWriter:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def log_batch(self, project: str, run_id: str, batch: Batch) -> bool:
        """Applies the batch; returns False when its request id was applied before."""
        run_uuid = uuid.UUID(run_id)
        if _small_metrics_only(batch):
            async with self._pool.acquire() as conn:
                await _write_small(conn, project, run_uuid, batch.metrics)
            return True
        async with self._pool.acquire() as conn, conn.transaction():
            await lock_writable(conn, project, run_uuid)
            if batch.request_id and not await _claim_request(conn, run_uuid, batch.request_id):
                return False
            if batch.params:
                await _write_params(conn, run_uuid, batch.params)
            if batch.tags:
                await conn.execute(
                    """INSERT INTO tracking.tags (run_id, key, value)
                       SELECT $1, k, v FROM unnest($2::text[], $3::text[]) AS t(k, v)
                       ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value""",
                    run_uuid,
                    list(batch.tags),
                    list(batch.tags.values()),
                )
            if len(batch.metrics):
                await _copy_chunks(conn, run_uuid, batch.metrics)
        return True

    async def delete_tag(self, project: str, run_id: str, key: str) -> None:
        run_uuid = uuid.UUID(run_id)
        async with self._pool.acquire() as conn, conn.transaction():
            await lock_writable(conn, project, run_uuid)
            deleted = await conn.fetchval(
                "DELETE FROM tracking.tags WHERE run_id = $1 AND key = $2 RETURNING 1",
                run_uuid,
                key,
            )
        if deleted is None:
            raise NotFound(
                "TAG_NOT_FOUND", f"run {run_id} has no tag {key!r}", metadata={"key": key}
            )

    async def log_inputs(self, project: str, run_id: str, inputs: Sequence[RunInput]) -> None:
        run_uuid = uuid.UUID(run_id)
        async with self._pool.acquire() as conn, conn.transaction():
            await lock_writable(conn, project, run_uuid)
            await conn.executemany(
                """INSERT INTO tracking.run_inputs (run_id, kind, name, uri, digest, context)
                   VALUES ($1, $2, $3, $4, $5, $6)
                   ON CONFLICT (run_id, kind, uri, context)
                   DO UPDATE SET name = excluded.name, digest = excluded.digest""",
                [(run_uuid, i.kind, i.name, i.uri, i.digest, i.context) for i in inputs],
            )


def _small_metrics_only(batch: Batch) -> bool:
    return len(batch.metrics) <= STATEMENT_MAX_POINTS and not (
        batch.params or batch.tags or batch.request_id
    )


async def _claim_request(conn: asyncpg.Connection, run_id: uuid.UUID, request_id: str) -> bool:
    claimed = await conn.fetchval(
        """INSERT INTO tracking.applied_batches (run_id, request_id) VALUES ($1, $2)
           ON CONFLICT DO NOTHING RETURNING 1""",
        run_id,
        request_id,
    )
    return claimed is not None


async def _write_params(
    conn: asyncpg.Connection, run_id: uuid.UUID, params: dict[str, str]
) -> None:
    """Params are immutable: the same value again is fine, another value is refused."""
    keys, values = list(params), list(params.values())
    clash = await conn.fetchrow(
        """SELECT p.key, p.value AS old, n.value AS new
           FROM tracking.params p JOIN unnest($2::text[], $3::text[]) AS n(key, value)
             ON p.key = n.key
           WHERE p.run_id = $1 AND p.value <> n.value ORDER BY p.key LIMIT 1""",
        run_id,
        keys,
        values,
    )
    if clash is not None:
        raise FailedPrecondition(
            "PARAM_ALREADY_LOGGED",
            f"param {clash['key']!r} of run {run_id.hex} is {clash['old']!r} and cannot change "
            f"to {clash['new']!r}: params are immutable",
            metadata={"key": clash["key"], "old_value": clash["old"], "new_value": clash["new"]},
        )
    await conn.execute(
        """INSERT INTO tracking.params (run_id, key, value)
           SELECT $1, k, v FROM unnest($2::text[], $3::text[]) AS t(k, v)
           ON CONFLICT (run_id, key) DO NOTHING""",
        run_id,
        keys,
        values,
    )


# Up to this many points, one SQL statement with array parameters is quickest; above
# it, binary COPY of chunks laid out with numpy (pgcopy.py) is.
STATEMENT_MAX_POINTS = 1000
_CHUNK_COLUMNS = ("run_id", "key", "min_step", "max_step", "steps", "values", "timestamps_ms")

# The latest point per (run, key) moves forward only: greatest step, then timestamp,
# then value, as MLflow decides it.
_LATEST_UPSERT = """
    ON CONFLICT (run_id, key) DO UPDATE
        SET value = excluded.value, step = excluded.step, timestamp_ms = excluded.timestamp_ms
        WHERE (excluded.step, excluded.timestamp_ms, excluded.value)
            > (l.step, l.timestamp_ms, l.value)"""

# One statement, so a small metrics-only write is atomic without a transaction of its
# own: it checks the run (holding it against a concurrent delete), appends one history
# chunk per key and moves each key's latest point. If the run may not be written,
# "points" is empty and nothing is written; the caller raises from the stages returned.
_WRITE_SMALL = f"""
WITH run AS (
    SELECT r.lifecycle_stage AS run_stage, e.lifecycle_stage AS experiment_stage
    FROM tracking.runs r JOIN tracking.experiments e USING (experiment_id)
    WHERE r.project = $1 AND r.run_id = $2
    FOR SHARE OF r
), points AS (
    SELECT p.* FROM unnest($3::text[], $4::float8[], $5::int8[], $6::int8[])
        AS p(key, value, step, ts)
    WHERE EXISTS (SELECT 1 FROM run WHERE run_stage = 1 AND experiment_stage = 1)
), chunks AS (
    INSERT INTO tracking.metric_chunks
        (run_id, key, min_step, max_step, steps, "values", timestamps_ms)
    SELECT $2, key, min(step), max(step), array_agg(step ORDER BY step, ts, value),
           array_agg(value ORDER BY step, ts, value), array_agg(ts ORDER BY step, ts, value)
    FROM points GROUP BY key
    RETURNING key, chunk_id
), latest AS (
    INSERT INTO tracking.latest_metrics AS l (run_id, key, value, step, timestamp_ms)
    SELECT DISTINCT ON (key) $2, key, value, step, ts FROM points
    ORDER BY key, step DESC, ts DESC, value DESC
    {_LATEST_UPSERT}
)
SELECT run_stage, experiment_stage,
    ARRAY(SELECT key FROM chunks WHERE chunk_id % {compaction.CHECK_EVERY} = 0) AS to_merge
FROM run"""

_WRITE_LATEST = f"""
INSERT INTO tracking.latest_metrics AS l (run_id, key, value, step, timestamp_ms)
SELECT $1, * FROM unnest($2::text[], $3::float8[], $4::int8[], $5::int8[])
{_LATEST_UPSERT}"""


async def _write_small(
    conn: asyncpg.Connection, project: str, run_id: uuid.UUID, metrics: MetricColumns
) -> None:
    keys = [metrics.keys[i] for i in metrics.key_indexes.tolist()]
    row = await conn.fetchrow(
        _WRITE_SMALL,
        project,
        run_id,
        keys,
        metrics.values.tolist(),
        metrics.steps.tolist(),
        metrics.timestamps_ms.tolist(),
    )
    check_writable(run_id, row)
    for key in row["to_merge"]:
        await compaction.merge_small_chunks(conn, run_id, key)


async def _copy_chunks(conn: asyncpg.Connection, run_id: uuid.UUID, metrics: MetricColumns) -> None:
    """Within the caller's transaction, after the run was locked."""
    rows, latest = [], []
    for key, steps, values, timestamps in _split_by_key(metrics):
        rows.append(
            [
                pgcopy.uuid_field(run_id),
                pgcopy.text_field(key),
                pgcopy.int8_field(int(steps[0])),
                pgcopy.int8_field(int(steps[-1])),
                pgcopy.int8_array_field(steps),
                pgcopy.float8_array_field(values),
                pgcopy.int8_array_field(timestamps),
            ]
        )
        # Sorted by (step, timestamp, value) with NaN last, as PostgreSQL orders it.
        latest.append((key, float(values[-1]), int(steps[-1]), int(timestamps[-1])))
    await conn.copy_to_table(
        "metric_chunks",
        schema_name="tracking",
        columns=_CHUNK_COLUMNS,
        source=io.BytesIO(pgcopy.stream(rows)),
        format="binary",
    )
    await conn.execute(_WRITE_LATEST, run_id, *map(list, zip(*latest, strict=True)))


def _split_by_key(metrics: MetricColumns) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Per key, its steps, values and timestamps sorted by (step, timestamp, value)."""
    order = np.lexsort((metrics.values, metrics.timestamps_ms, metrics.steps, metrics.key_indexes))
    key_indexes = metrics.key_indexes[order]
    steps, values = metrics.steps[order], metrics.values[order]
    timestamps = metrics.timestamps_ms[order]
    starts = [0, *(np.flatnonzero(np.diff(key_indexes)) + 1).tolist()]
    ends = [*starts[1:], len(order)]
    return [
        (metrics.keys[int(key_indexes[a])], steps[a:b], values[a:b], timestamps[a:b])
        for a, b in zip(starts, ends, strict=True)
    ]
