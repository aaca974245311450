"""Garbage collection's tracking step: removes for good the experiments and runs
soft-deleted before the cut-off, with everything logged to them, and hands their
artifact locations to the artifacts service in the same transaction.

A run goes when it was deleted before the cut-off, or its experiment was. An
experiment goes once it was deleted before the cut-off and has no run left; its name
is free from then on. Each batch is one short transaction, so a restart resumes by
selecting what is left.
"""

from __future__ import annotations

import asyncpg

from ...common.service import Purge, Resources
from ..model import LifecycleStage

# Sets delete_time with the lifecycle stage: when first deleted, NULL when restored.
DELETE_TIME = (
    f"delete_time = CASE WHEN $3::smallint = {int(LifecycleStage.DELETED)} "
    "THEN coalesce(delete_time, clock_timestamp()) END"
)
# Runs per transaction; each takes its params, tags, metric chunks and inputs along.
BATCH = 100
_DELETED = int(LifecycleStage.DELETED)
# Two selections, each served by a partial index on delete_time: runs deleted on their
# own, and runs of deleted experiments (whose rows are share-locked, so that they
# cannot be restored under us).
_RUNS_DELETED = f"""tracking.runs r
    WHERE r.lifecycle_stage = {_DELETED} AND r.delete_time < $1"""
_RUNS_OF_DELETED = f"""tracking.experiments e JOIN tracking.runs r USING (experiment_id)
    WHERE e.lifecycle_stage = {_DELETED} AND e.delete_time < $1"""
_EXPERIMENTS = f"""tracking.experiments e
    WHERE e.lifecycle_stage = {_DELETED} AND e.delete_time < $1"""
_LOCKS = {
    _RUNS_DELETED: "FOR UPDATE SKIP LOCKED",
    _RUNS_OF_DELETED: "FOR UPDATE OF r SKIP LOCKED FOR SHARE OF e SKIP LOCKED",
}


async def purge(resources: Resources, gc: Purge) -> None:
    pool = resources.pool
    async with pool.acquire() as conn:
        # An estimate: a run deleted on its own in a deleted experiment counts twice.
        planned = [
            await conn.fetchval(f"SELECT count(*) FROM {source}", gc.cutoff)
            for source in (_RUNS_DELETED, _RUNS_OF_DELETED, _EXPERIMENTS)
        ]
    await gc.plan(sum(planned))
    for kind in ("runs", "experiments"):  # listed in the counts even when none go
        await gc.done(kind, 0)
    for source in _LOCKS:
        while removed := await _purge_runs(pool, gc, source):
            await gc.done("runs", removed)
    while removed := await _purge_experiments(pool, gc):
        await gc.done("experiments", removed)


async def _purge_runs(pool: asyncpg.Pool, gc: Purge, source: str) -> int:
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            f"""SELECT r.run_id, r.artifact_uri FROM {source}
                LIMIT {BATCH} {_LOCKS[source]}""",
            gc.cutoff,
        )
        if rows:
            await conn.execute(
                "DELETE FROM tracking.runs WHERE run_id = ANY($1::uuid[])",
                [row["run_id"] for row in rows],
            )
            await gc.discard(conn, [row["artifact_uri"] for row in rows])
    return len(rows)


async def _purge_experiments(pool: asyncpg.Pool, gc: Purge) -> int:
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            f"""SELECT e.experiment_id, e.artifact_location FROM {_EXPERIMENTS}
                  AND NOT EXISTS (SELECT FROM tracking.runs r
                                  WHERE r.experiment_id = e.experiment_id)
                LIMIT {BATCH} FOR UPDATE SKIP LOCKED""",
            gc.cutoff,
        )
        if rows:
            await conn.execute(
                "DELETE FROM tracking.experiments WHERE experiment_id = ANY($1::bigint[])",
                [row["experiment_id"] for row in rows],
            )
            await gc.discard(conn, await _unshared(conn, [r["artifact_location"] for r in rows]))
    return len(rows)


async def _unshared(conn: asyncpg.Connection, locations: list[str]) -> list[str]:
    """The locations no remaining experiment keeps artifacts in, under or above: a
    location chosen by hand may be another experiment's too."""
    rows = await conn.fetch(
        """SELECT loc FROM unnest($1::text[]) AS loc
           WHERE NOT EXISTS (
               SELECT FROM tracking.experiments o
               WHERE o.artifact_location = loc
                  OR starts_with(o.artifact_location, loc || '/')
                  OR starts_with(loc, o.artifact_location || '/'))""",
        locations,
    )
    return [row["loc"] for row in rows]
