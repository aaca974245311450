"""Forgets the request ids of old LogBatch and LogMetric calls, so applied_batches stays
bounded.

LogBatch's are kept longer than other writes' ids (CAIRN_REQUEST_ID_RETENTION_SECONDS):
a run that outlived an outage leaves a journal of batches and their ids, and syncing it
within CAIRN_BATCH_ID_RETENTION_SECONDS stores each batch exactly once. LogMetric's
(claimed in its own statement with the request's fingerprint, which only they carry)
are kept as long as other writes' ids: one row per call, which no journal replays.

At thousands of calls a second, an hour of LogMetric ids is millions of rows: they are
deleted in slices of `SLICE_ROWS`, each a statement well within the statement timeout
and a short hold on the rows it deletes.
"""

from __future__ import annotations

import asyncio

import asyncpg

from ..common import logs
from ..common.service import Resources

_log = logs.get("cairn.tracking.retention")
MAX_INTERVAL_SECONDS = 3600
SLICE_ROWS = 10_000

# The oldest LogBatch rows, then the old LogMetric rows, each kind by its own retention
# (either may be the shorter) and through a partial index of its own rows (migrations
# 0007, 0018). now() (each statement is its own transaction), not clock_timestamp(), so
# that the cutoff bounds the index scan, which stops at the first young row, instead of
# filtering a month of young LogBatch ids row by row; ctid IN (...) deletes the rows
# found by their TIDs. Rows another transaction holds (a purge deleting its runs'
# ids, in another order) are passed over, not waited for: the two never deadlock, and
# what is passed over goes with its run or at the next pass.
_PRUNE_BATCH = """
DELETE FROM tracking.applied_batches WHERE ctid IN (
    SELECT ctid FROM tracking.applied_batches
    WHERE applied_at < now() - $1 * interval '1 second' AND fingerprint IS NULL
    ORDER BY applied_at LIMIT $2 FOR UPDATE SKIP LOCKED)"""
_PRUNE_METRIC = """
DELETE FROM tracking.applied_batches WHERE ctid IN (
    SELECT ctid FROM tracking.applied_batches
    WHERE fingerprint IS NOT NULL
      AND applied_at < now() - $1 * interval '1 second'
    ORDER BY applied_at LIMIT $2 FOR UPDATE SKIP LOCKED)"""


async def forget_batch_ids(resources: Resources) -> None:
    """Prunes applied_batches four times per retention (at most hourly), until cancelled."""
    config = resources.config
    retention = config.batch_id_retention_seconds
    metric_retention = config.request_id_retention_seconds
    while True:
        try:
            pruned = await prune(resources.pool, retention, metric_retention)
            if pruned:
                _log.info("old LogBatch and LogMetric request ids forgotten", count=pruned)
        except Exception:
            _log.exception("forgetting old LogBatch and LogMetric request ids failed")
        await asyncio.sleep(min(MAX_INTERVAL_SECONDS, retention / 4, metric_retention / 4))


async def prune(
    pool: asyncpg.Pool,
    retention_seconds: float,
    metric_retention_seconds: float | None = None,
    slice_rows: int = SLICE_ROWS,
) -> int:
    """Forgets LogBatch ids older than retention_seconds and LogMetric ids older than
    metric_retention_seconds (by default the same); returns how many."""
    if metric_retention_seconds is None:
        metric_retention_seconds = retention_seconds
    async with pool.acquire() as conn:
        pruned = await _in_slices(conn, _PRUNE_BATCH, retention_seconds, slice_rows)
        return pruned + await _in_slices(conn, _PRUNE_METRIC, metric_retention_seconds, slice_rows)


async def _in_slices(
    conn: asyncpg.Connection, statement: str, retention_seconds: float, slice_rows: int
) -> int:
    """Runs the DELETE of at most slice_rows rows until one deletes fewer; returns how
    many rows went. Each slice commits by itself."""
    pruned = 0
    while True:
        status = await conn.execute(statement, retention_seconds, slice_rows)
        deleted = int(status.split()[-1])
        pruned += deleted
        if deleted < slice_rows:
            return pruned
