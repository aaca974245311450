"""Forgets the request ids of old LogBatch and LogMetric calls, so applied_batches stays
bounded.

LogBatch's are kept longer than other writes' ids (CAIRN_REQUEST_ID_RETENTION_SECONDS):
a run that outlived an outage leaves a journal of batches and their ids, and syncing it
within CAIRN_BATCH_ID_RETENTION_SECONDS stores each batch exactly once. LogMetric's
(claimed in its own statement, prefixed METRIC_REQUEST_PREFIX) are kept as long as
other writes' ids: one row per call, which no journal replays.
"""

from __future__ import annotations

import asyncio

import asyncpg

from ..common import logs
from ..common.service import Resources

_log = logs.get("cairn.tracking.retention")
MAX_INTERVAL_SECONDS = 3600
# LogMetric's request ids (from the call's metadata) share applied_batches with the
# request_id fields of LogBatch calls; the prefix keeps the two kinds apart.
METRIC_REQUEST_PREFIX = "LogMetric:"


async def forget_batch_ids(resources: Resources) -> None:
    """Prunes applied_batches four times per retention (at most hourly), until cancelled."""
    config = resources.config
    retention = config.batch_id_retention_seconds
    metric_retention = config.request_id_retention_seconds
    while True:
        try:
            pruned = await prune(resources.pool, retention, metric_retention)
            if pruned:
                _log.info("LogBatch and LogMetric request ids forgotten", count=pruned)
        except Exception:
            _log.exception("pruning LogBatch request ids failed")
        await asyncio.sleep(min(MAX_INTERVAL_SECONDS, retention / 4, metric_retention / 4))


async def prune(
    pool: asyncpg.Pool, retention_seconds: float, metric_retention_seconds: float | None = None
) -> int:
    """Forgets LogBatch ids older than retention_seconds and LogMetric ids older than
    metric_retention_seconds (by default the same); returns how many."""
    if metric_retention_seconds is None:
        metric_retention_seconds = retention_seconds
    shorter = min(retention_seconds, metric_retention_seconds)
    async with pool.acquire() as conn:
        status = await conn.execute(
            """DELETE FROM tracking.applied_batches
               WHERE applied_at < clock_timestamp() - $2 * interval '1 second'
                 AND (starts_with(request_id, $3)
                      OR applied_at < clock_timestamp() - $1 * interval '1 second')""",
            retention_seconds,
            shorter,
            METRIC_REQUEST_PREFIX,
        )
    return int(status.split()[-1])
