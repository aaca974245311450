"""Writing to a run: batches of metrics, params and tags, tag deletes and inputs.

`log_batch` is the one write path: LogMetric, LogParam and SetTag are batches of one.
A batch runs in one transaction, so it lands whole or not at all, and a batch with a
request id records that id in the same transaction, so a retry is applied once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from itertools import repeat

import asyncpg

from ...common.errors import FailedPrecondition, NotFound
from ..model import Batch, MetricColumns, RunInput
from .runs import lock_writable

# Below this many points one INSERT ... unnest beats COPY's extra round trips.
COPY_THRESHOLD = 256


class RunWriter:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def log_batch(self, project: str, run_id: str, batch: Batch) -> bool:
        """Applies the batch; returns False when its request id was applied before."""
        run_uuid = uuid.UUID(run_id)
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
                await _write_metrics(conn, run_uuid, batch.metrics)
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


async def _write_metrics(
    conn: asyncpg.Connection, run_id: uuid.UUID, metrics: MetricColumns
) -> None:
    columns = (metrics.keys, metrics.values, metrics.steps, metrics.timestamps_ms)
    if len(metrics) >= COPY_THRESHOLD:
        await conn.copy_records_to_table(
            "metrics",
            schema_name="tracking",
            columns=("run_id", "key", "value", "step", "timestamp_ms"),
            records=zip(repeat(run_id), *columns, strict=False),
        )
    else:
        await conn.execute(
            """INSERT INTO tracking.metrics (run_id, key, value, step, timestamp_ms)
               SELECT $1, * FROM unnest($2::text[], $3::float8[], $4::int8[], $5::int8[])""",
            run_id,
            *columns,
        )
    # The latest point per key: greatest step, then timestamp, then value (as MLflow).
    await conn.execute(
        """INSERT INTO tracking.latest_metrics AS l (run_id, key, value, step, timestamp_ms)
           SELECT DISTINCT ON (key) $1, key, value, step, ts
           FROM unnest($2::text[], $3::float8[], $4::int8[], $5::int8[]) AS b(key, value, step, ts)
           ORDER BY key, step DESC, ts DESC, value DESC
           ON CONFLICT (run_id, key) DO UPDATE
             SET value = excluded.value, step = excluded.step, timestamp_ms = excluded.timestamp_ms
             WHERE (excluded.step, excluded.timestamp_ms, excluded.value)
                 > (l.step, l.timestamp_ms, l.value)""",
        run_id,
        *columns,
    )
