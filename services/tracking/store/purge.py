"""Garbage collection's tracking step: removes for good the experiments and runs
soft-deleted before the cut-off, with everything logged to them, and hands their
artifact locations to the artifacts service in the same transaction.

A run goes when it was deleted before the cut-off, or its experiment was. An
experiment goes once it was deleted before the cut-off and has no run left; its name
is free from then on, and it cannot be restored once the first of its runs went
(`purge_time`). Runs go a batch at a time, in short transactions: one claims the batch
(`purge_time`: none of them can be restored from then on, nor their experiments), one
per piece of their history, one removes their rows. In one transaction, each piece
rescanned what the earlier ones deleted, and so did the cascade of the runs' DELETE:
a history of millions of rows outlasted the statement timeout, and every later
collection failed the same way. The cascade still visits what the pieces deleted
(until a vacuum), so it runs without the timeout; it holds only the claimed runs,
which no one waits for. A restart resumes by selecting what is left; a claimed run
stays deleted (it cannot be restored) until a collection whose cut-off covers it
ends it, as a takeover of the one that claimed it does. Rows another transaction holds
are skipped, left for a later run, and counted ("runs_skipped",
"experiments_skipped"). Two collections at once may both work on a claimed batch;
each run is counted by the one whose DELETE removed it.

What goes of the artifacts: each run's own directory (its artifact_uri), and an
experiment's location only when Cairn made it (`<project>/experiments/<id>`): a
location chosen by hand may hold files no experiment owns, as in MLflow.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from ...common import sql
from ...common.service import Purge, Resources
from ..model import ARTIFACT_SCHEME, LifecycleStage

# Runs (or experiments) per transaction; each takes everything logged to it along.
BATCH = 100
# Rows of one table removed per statement: a run's history may be millions of metric
# chunks or request ids, and every statement must end within the statement timeout, so
# nothing that grows with what was logged is left to ON DELETE CASCADE.
PIECE = 10_000
# Every table keyed by run, but for run_sizes (one row a run, which goes with it):
# applied_batches holds one row per LogBatch and LogMetric call, kept for days.
_RUN_HISTORY = (
    "metric_chunks",
    "latest_metrics",
    "params",
    "tags",
    "run_inputs",
    "applied_batches",
)
_OF_RUNS = "run_id = ANY($1::uuid[])"
_OF_EXPERIMENTS = "experiment_id = ANY($1::bigint[])"
_DELETED = int(LifecycleStage.DELETED)
# Two selections, each served by a partial index on delete_time: runs deleted on their
# own, and runs of deleted experiments (whose rows are locked, so that they cannot be
# restored under us).
_RUNS_DELETED = f"""tracking.runs r
    WHERE r.lifecycle_stage = {_DELETED} AND r.delete_time < $1"""
_RUNS_OF_DELETED = f"""tracking.experiments e JOIN tracking.runs r USING (experiment_id)
    WHERE e.lifecycle_stage = {_DELETED} AND e.delete_time < $1"""
_EXPERIMENTS = f"""tracking.experiments e
    WHERE e.lifecycle_stage = {_DELETED} AND e.delete_time < $1"""
_LOCKS = {
    _RUNS_DELETED: "FOR UPDATE SKIP LOCKED",
    # The experiment's row too, which the batch marks being purged; a restore waits.
    _RUNS_OF_DELETED: "FOR UPDATE OF r SKIP LOCKED FOR NO KEY UPDATE OF e SKIP LOCKED",
}


def delete_time(stage: str) -> str:
    """The assignment setting delete_time with the lifecycle stage (the SQL
    expression `stage`): when first deleted, NULL when restored."""
    return (
        f"delete_time = CASE WHEN {stage}::smallint = {_DELETED} "
        "THEN coalesce(delete_time, clock_timestamp()) END"
    )


def generated_location(project: str, experiment_id: int) -> str:
    """The artifact location Cairn gives an experiment created without one."""
    return f"{ARTIFACT_SCHEME}://{project}/experiments/{experiment_id}"


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
        while claimed := await _claim(pool, gc, source):
            await gc.done("runs", await _purge_runs(pool, gc, claimed))
    while removed := await _purge_experiments(pool, gc):
        await gc.done("experiments", removed)
    await _count_skipped(pool, gc)


# The runs a collection leaves, each once: a run deleted on its own in a deleted
# experiment is in both selections. A claimed run is left out: another collection is
# removing it (its DELETE holds the row), so it is not left for the next one. One that
# collection is claiming just then looks unclaimed; telling it apart by its lock
# (counting FOR KEY SHARE SKIP LOCKED) would lock every run left, all those of an
# experiment a restore holds among them.
_SKIPPED_RUNS = f"""SELECT
    (SELECT count(*) FROM {_RUNS_DELETED} AND r.purge_time IS NULL)
  + (SELECT count(*) FROM {_RUNS_OF_DELETED} AND r.purge_time IS NULL
         AND NOT (r.lifecycle_stage = {_DELETED} AND r.delete_time < $1))"""


async def _count_skipped(pool: asyncpg.Pool, gc: Purge) -> None:
    """What is left is what other transactions held (a restore under way, say)."""
    async with pool.acquire() as conn:
        runs = await conn.fetchval(_SKIPPED_RUNS, gc.cutoff)
        experiments = await conn.fetchval(f"SELECT count(*) FROM {_EXPERIMENTS}", gc.cutoff)
    # Counted when none were too, as every count is: the answer's counts have each key.
    for kind, skipped in (("runs_skipped", runs), ("experiments_skipped", experiments)):
        await gc.done(kind, skipped, progress=0)


async def _purge_runs(pool: asyncpg.Pool, gc: Purge, run_ids: list[uuid.UUID]) -> int:
    """Removes claimed runs; returns how many this collection removed (another one, a
    collection started meanwhile, may have removed some: each is counted once)."""
    async with pool.acquire() as conn:  # each piece a transaction of its own
        for table in _RUN_HISTORY:
            await _delete_in_pieces(conn, table, _OF_RUNS, run_ids)
    async with pool.acquire() as conn, conn.transaction():
        # The cascade still visits each row the pieces deleted, until a vacuum: a
        # cost that grows with the history, and holds no lock anyone waits for.
        await sql.unguarded(conn)
        locations = await conn.fetch(
            """DELETE FROM tracking.runs WHERE run_id = ANY($1::uuid[])
               RETURNING artifact_uri""",
            run_ids,
        )
        # Closed: a run's directory is named by its id, which no run has again.
        directories = await unshared(conn, [r[0] for r in locations], above=False)
        await gc.discard(conn, directories, closed=True)
    return len(locations)


async def _claim(pool: asyncpg.Pool, gc: Purge, source: str) -> list[uuid.UUID]:
    """A batch of the runs source selects, claimed: neither they nor (for runs of
    deleted experiments) their experiments can be restored from then on (restoring
    checks purge_time, and migration 0014's trigger refuses it to servers that do
    not), since they would come back with part of what they held."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            f"SELECT r.run_id, r.experiment_id FROM {source} LIMIT {BATCH} {_LOCKS[source]}",
            gc.cutoff,
        )
        if not rows:
            return []
        await conn.execute(
            """UPDATE tracking.runs SET purge_time = clock_timestamp()
               WHERE run_id = ANY($1::uuid[]) AND purge_time IS NULL""",
            [row["run_id"] for row in rows],
        )
        if source is _RUNS_OF_DELETED:
            await conn.execute(
                f"""UPDATE tracking.experiments SET purge_time = clock_timestamp()
                    WHERE experiment_id = ANY($1::bigint[]) AND lifecycle_stage = {_DELETED}
                      AND purge_time IS NULL""",
                list({row["experiment_id"] for row in rows}),
            )
    return [row["run_id"] for row in rows]


async def _delete_in_pieces(
    conn: asyncpg.Connection, table: str, owned: str, owners: list[Any]
) -> None:
    """Deletes the rows of a table the condition `owned` (of $1, the owners) selects,
    PIECE rows a statement (a transaction each, unless conn is in one)."""
    statement = _DELETE_PIECE.format(table=table, owned=owned)
    while await conn.fetchval(statement, owners, PIECE) == PIECE:
        pass


# Whether more may be left is told by the rows picked, not by those deleted: the
# retention of request ids (tracking/retention.py) may delete some of them meanwhile,
# and what stopped the loop early would go in the one DELETE of the runs' rows.
_DELETE_PIECE = """
WITH picked AS (
    SELECT ARRAY(SELECT ctid FROM tracking.{table} WHERE {owned} LIMIT $2) AS ctids
), gone AS (
    DELETE FROM tracking.{table} WHERE ctid = ANY((SELECT ctids FROM picked)::tid[])
)
SELECT cardinality(ctids) FROM picked"""


async def _purge_experiments(pool: asyncpg.Pool, gc: Purge) -> int:
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            f"""SELECT e.experiment_id, e.project, e.artifact_location FROM {_EXPERIMENTS}
                  AND NOT EXISTS (SELECT FROM tracking.runs r
                                  WHERE r.experiment_id = e.experiment_id)
                LIMIT {BATCH} FOR UPDATE SKIP LOCKED""",
            gc.cutoff,
        )
        if rows:
            experiment_ids = [row["experiment_id"] for row in rows]
            # Up to MAX_EXPERIMENT_TAG_BYTES of tags each, which may be many rows.
            await _delete_in_pieces(conn, "experiment_tags", _OF_EXPERIMENTS, experiment_ids)
            await conn.execute(
                "DELETE FROM tracking.experiments WHERE experiment_id = ANY($1::bigint[])",
                experiment_ids,
            )
            generated = [
                row["artifact_location"]
                for row in rows
                if row["artifact_location"]
                == generated_location(row["project"], row["experiment_id"])
            ]
            await gc.discard(conn, await unshared(conn, generated))
    return len(rows)


async def unshared(
    conn: asyncpg.Connection, locations: list[str], *, above: bool = True
) -> list[str]:
    """The locations no remaining experiment keeps artifacts in, under or (when above)
    above: an experiment's location chosen by hand may lie inside another's, or inside
    a run's directory (whose own experiment is above it, and does not keep it). In and
    under lie in one range of experiments_by_location (migration 0012: locations' first
    600 characters), from the location to it followed by "0", the byte after "/", each
    cut as the index cuts them; above are the location's parts before each of its "/",
    each looked up in that index (comparing every experiment's location to each one
    took 9 s for 100 locations among 100,000 experiments)."""
    above_sql = f"AND NOT EXISTS ({_ABOVE})" if above else ""
    rows = await conn.fetch(
        f"""SELECT loc FROM unnest($1::text[]) AS loc
            WHERE NOT EXISTS (
                SELECT FROM tracking.experiments o
                WHERE substr(o.artifact_location, 1, 600) COLLATE "C"
                          BETWEEN substr(loc, 1, 600) AND substr(loc || '0', 1, 600)
                      AND (o.artifact_location = loc
                           OR starts_with(o.artifact_location, loc || '/')))
            {above_sql}""",
        locations,
    )
    return [row["loc"] for row in rows]


# An experiment whose location holds loc: one that is loc up to one of its "/".
_ABOVE = """SELECT FROM generate_series(1, length(loc)) AS cut
    JOIN tracking.experiments o
        ON substr(o.artifact_location, 1, 600) COLLATE "C"
           = substr(left(loc, cut - 1), 1, 600) COLLATE "C"
    WHERE substr(loc, cut, 1) = '/' AND o.artifact_location = left(loc, cut - 1)"""
