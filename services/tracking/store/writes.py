"""Writing to a run: batches of metrics, params and tags, single points, tag deletes and inputs.

`log_batch` is the write path of LogBatch, LogParam and SetTag (batches of one), and
`log_metric` that of LogMetric's one point. A batch lands whole or not at all, and a
write with a request id records that id with it, so a retry is applied once. A point
(LogMetric), or a small batch of metrics alone, is one SQL statement (and, now and then,
a second that merges the small chunks such writes leave behind: compaction.py); any
other batch is one transaction: BEGIN, a
statement that checks the run, claims the request id and moves the latest points,
params and tags if any, what they add to the run's size, binary COPY of its history
chunks, COMMIT. A write whose request id was taken reads what request took it: the same
one is answered OK, another is REQUEST_ID_REUSED. A write that would take the run past
its bound fails whole (sizes.within_bound), in either form."""

from __future__ import annotations

import contextlib
import functools
import uuid

import asyncpg

from ...common import answers, logs
from ...common.write_slots import WriteSlots
from ..model import Batch, MetricColumns, MetricPoint
from . import compaction, pgcopy, sizes
from .chunk_layout import Chunks, once
from .entry_writes import EntryWrites, write_params, write_tags
from .write_statements import (
    BEGIN_BATCH,
    BEGIN_RENAMING_BATCH,
    METRIC_REQUEST_PREFIX,
    WRITE_ONE,
    WRITE_SMALL,
    Claim,
)

_log = logs.get("cairn.tracking.writes")


class RunWriter(EntryWrites):
    """Writes to runs, each within bound bytes of entries (sizes.py), its parts in their
    modules: the write statements and the request ids they claim (`write_statements.py`),
    a batch's history chunks (`chunk_layout.py`), and params, tags and inputs
    (`entry_writes.py`); here, batches and metric points."""

    def __init__(self, pool: asyncpg.Pool, bound: int, slots: WriteSlots) -> None:
        self._pool = pool
        self._bound = bound
        self._slots = slots

    async def log_batch(self, project: str, run_id: str, batch: Batch) -> bool:
        """Applies the batch; returns False when its request id was applied before.

        Raises:
            InvalidArgument: RUN_TOO_LARGE, the batch would take the run past its bound.
        """
        run_uuid = uuid.UUID(run_id)
        sizes.check_batch(batch, run_uuid, self._bound)
        claim = Claim(batch.request_id, batch.fingerprint() if batch.request_id else None)
        if _small_metrics_only(batch):
            write = functools.partial(self._write_small, project, run_uuid, batch.metrics, claim)
        else:
            chunks = await answers.built(
                len(batch.metrics.keys), lambda: Chunks.of(run_uuid, batch.metrics)
            )
            write = functools.partial(self._write, project, run_uuid, batch, chunks, claim)
        async with self._turn(run_uuid):
            return await sizes.within_bound(self._pool, run_uuid, self._bound, write)

    def _turn(self, run_id: uuid.UUID) -> contextlib.AbstractAsyncContextManager[None]:
        """One of the run's slots (write_slots.py): the turn of LogBatch and LogMetric,
        which the interceptor does not record; none within a recorded call's turn."""
        return self._slots.turn(run_id)

    async def _write(
        self, project: str, run_uuid: uuid.UUID, batch: Batch, chunks: Chunks, claim: Claim
    ) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                BEGIN_RENAMING_BATCH if batch.run_name else BEGIN_BATCH,
                project,
                run_uuid,
                claim.request_id,
                claim.fingerprint,
                *chunks.latest,
            )
            if not await claim.applied(conn, run_uuid, row):
                return False
            added = row["added_bytes"]
            if batch.params:
                added += await write_params(conn, run_uuid, batch.params)
            if batch.tags:
                added += await write_tags(conn, run_uuid, batch.tags)
            if batch.run_name:
                await conn.execute(
                    "UPDATE tracking.runs SET run_name = $2 WHERE run_id = $1",
                    run_uuid,
                    batch.run_name,
                )
            if chunks.copy:
                await conn.copy_to_table(
                    "metric_chunks",
                    schema_name="tracking",
                    columns=pgcopy.CHUNK_COLUMNS,
                    source=once(chunks.copy),
                    format="binary",
                )
            # Last, so that the total's row is locked only until the commit.
            await sizes.grow(conn, run_uuid, added, self._bound)
        return True

    async def log_metric(
        self,
        project: str,
        run_id: str,
        point: MetricPoint,
        request_id: str | None,
        fingerprint: bytes,
    ) -> bool:
        """Applies a LogMetric call; returns False when its request id was applied before.

        One statement, one round trip in all (WRITE_ONE): it also claims the id, where
        the interceptor's transaction around it took five (docs/tracking.md);
        fingerprint (idempotency.fingerprint_of the request) tells a repeat from
        another request.

        Raises:
            InvalidArgument: REQUEST_ID_REUSED, the id came before with another request.
        """
        run_uuid = uuid.UUID(run_id)
        claim = Claim("", None)
        if request_id:
            claim = Claim(METRIC_REQUEST_PREFIX + request_id, fingerprint)
        async with self._turn(run_uuid):
            return await sizes.within_bound(
                self._pool,
                run_uuid,
                self._bound,
                lambda: self._write_one(project, run_uuid, point, claim),
            )

    async def _write_one(
        self, project: str, run_uuid: uuid.UUID, point: MetricPoint, claim: Claim
    ) -> bool:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                WRITE_ONE,
                project,
                run_uuid,
                claim.request_id,
                claim.fingerprint,
                point.key,
                point.value,
                point.step,
                point.timestamp_ms,
                self._bound,
            )
            if not await claim.applied(conn, run_uuid, row):
                return False
            if row["to_merge"]:
                await _merge(conn, run_uuid, point.key)
        return True

    async def _write_small(
        self, project: str, run_id: uuid.UUID, metrics: MetricColumns, claim: Claim
    ) -> bool:
        keys = [metrics.keys[i] for i in metrics.key_indexes.tolist()]
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                WRITE_SMALL,
                project,
                run_id,
                claim.request_id,
                claim.fingerprint,
                keys,
                metrics.values.tolist(),
                metrics.steps.tolist(),
                metrics.timestamps_ms.tolist(),
                self._bound,
            )
            if not await claim.applied(conn, run_id, row):
                return False
            for key in row["to_merge"]:
                await _merge(conn, run_id, key)
        return True


def _small_metrics_only(batch: Batch) -> bool:
    return len(batch.metrics) <= STATEMENT_MAX_POINTS and not (
        batch.params or batch.tags or batch.run_name
    )


# Up to this many points, one SQL statement with array parameters is quickest; above
# it, a transaction around binary COPY of chunks laid out with numpy (pgcopy.py) is.
# Measured here, a batch of 10 keys with a request id, ms per batch, statement against
# COPY: 1 point 0.95 / 1.85, 10 points 1.7 / 1.9, 30 points 2.1 / 2.2, 100 points
# 3.0 / 2.3, 300 points 5.0 / 2.8, 1,000 points 12 / 2.8.
STATEMENT_MAX_POINTS = 32


async def _merge(conn: asyncpg.Connection, run_id: uuid.UUID, key: str) -> None:
    """Merges the key's small chunks after a write committed. A merge that fails leaves
    the write applied and the chunks as they were (a later write merges them): failing
    the call would make a client without a request id apply it again."""
    try:
        await compaction.merge_small_chunks(conn, run_id, key)
    except Exception:
        _log.exception("merging small history chunks failed", run_id=run_id.hex, key=key)
