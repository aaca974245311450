"""Forgets the request ids of old LogBatch calls, so applied_batches stays bounded.

They are kept longer than other writes' ids (CAIRN_REQUEST_ID_RETENTION_SECONDS): a run
that outlived an outage leaves a journal of batches and their ids, and syncing it within
CAIRN_BATCH_ID_RETENTION_SECONDS stores each batch exactly once.
"""

from __future__ import annotations

import asyncio

import asyncpg

from ..common import logs
from ..common.service import Resources

_log = logs.get("cairn.tracking.retention")
MAX_INTERVAL_SECONDS = 3600


async def forget_batch_ids(resources: Resources) -> None:
    """Prunes applied_batches four times per retention (at most hourly), until cancelled."""
    retention = resources.config.batch_id_retention_seconds
    while True:
        try:
            pruned = await prune(resources.pool, retention)
            if pruned:
                _log.info("LogBatch request ids forgotten", count=pruned)
        except Exception:
            _log.exception("pruning LogBatch request ids failed")
        await asyncio.sleep(min(MAX_INTERVAL_SECONDS, retention / 4))


async def prune(pool: asyncpg.Pool, retention_seconds: float) -> int:
    async with pool.acquire() as conn:
        status = await conn.execute(
            """DELETE FROM tracking.applied_batches
               WHERE applied_at < clock_timestamp() - $1 * interval '1 second'""",
            retention_seconds,
        )
    return int(status.split()[-1])
