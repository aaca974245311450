"""Runs: create, read, update, soft delete, and loading what was logged to them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

import asyncpg

from ...common.errors import FailedPrecondition, NotFound
from ..model import LifecycleStage, Run, RunInfo, RunStatus
from ..names import generate_run_name
from . import sizes
from .pages import load_page, run_info
from .purge import delete_time

# A run reads as deleted when it or its experiment is.
RUN_COLUMNS = """r.run_id, r.project, r.experiment_id, r.run_name, r.user_id, r.status,
    r.start_time, r.end_time, r.artifact_uri, r.parent_run_id,
    greatest(r.lifecycle_stage, e.lifecycle_stage) AS lifecycle_stage"""
EXPERIMENT_OF_RUN = "JOIN tracking.experiments e ON e.experiment_id = r.experiment_id"
RUN_FROM = f"tracking.runs r {EXPERIMENT_OF_RUN}"
# A run a garbage collection has claimed (purge_time) reads as gone, NOT_FOUND as once
# it is removed: its history goes a table at a time, each in a transaction of its own,
# so until its row goes it would read with part of that history (no metrics, all its
# params). Claimed, it is as good as gone: it cannot be restored (RUN_BEING_PURGED).
UNCLAIMED = "r.purge_time IS NULL"
# A column of whether a garbage collection has claimed the experiment `e` (its purge
# began): read where a write checks its experiment, so that a claimed one is refused as
# EXPERIMENT_BEING_PURGED rather than with a restore that would be refused too.
EXPERIMENT_CLAIMED = "e.purge_time IS NOT NULL AS experiment_claimed"


class RunStore:
    """Runs' rows; a new run's tags count against bound (sizes.py)."""

    def __init__(self, pool: asyncpg.Pool, bound: int) -> None:
        self._pool = pool
        self._bound = bound

    async def create(
        self,
        project: str,
        experiment_id: int,
        *,
        run_name: str,
        user_id: str,
        start_time_ms: int,
        tags: dict[str, str],
        parent_run_id: str,
        status: RunStatus,
    ) -> Run:
        held = sum(sizes.entry_bytes(key, value) for key, value in tags.items())
        sizes.check_new_run(held, self._bound)
        run_id = uuid.uuid4()
        async with self._pool.acquire() as conn, conn.transaction():
            location = await _active_experiment_location(conn, project, experiment_id)
            if parent_run_id:
                await _existing_run(conn, project, parent_run_id)
            await conn.execute(
                """INSERT INTO tracking.runs (run_id, project, experiment_id, run_name, user_id,
                       status, start_time, artifact_uri, parent_run_id)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
                run_id,
                project,
                experiment_id,
                run_name or generate_run_name(),
                user_id,
                status,
                start_time_ms or now_ms(),
                f"{location}/{run_id.hex}/artifacts",
                uuid.UUID(parent_run_id) if parent_run_id else None,
            )
            if tags:
                await conn.execute(
                    """INSERT INTO tracking.tags (run_id, key, value)
                       SELECT $1, k, v FROM unnest($2::text[], $3::text[]) AS t(k, v)""",
                    run_id,
                    list(tags),
                    list(tags.values()),
                )
            await sizes.grow(conn, run_id, held, self._bound)  # its row: a trigger's
            return (await load_runs(conn, [await _info_row(conn, project, run_id)]))[0]

    async def get(self, project: str, run_id: str) -> Run:
        """The run as one snapshot sees it: a collection claiming it between reading its
        row and its history would have it read with part of that history."""
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            row = await _info_row(conn, project, uuid.UUID(run_id))
            return (await load_runs(conn, [row]))[0]

    async def update(
        self,
        project: str,
        run_id: str,
        status: RunStatus | None,
        end_time_ms: int | None,
        run_name: str,
    ) -> RunInfo:
        """Changes what is given: an end_time_ms of None leaves the end, 0 is now."""
        run_uuid = uuid.UUID(run_id)
        async with self._pool.acquire() as conn, conn.transaction():
            await lock_writable(conn, project, run_uuid, updating=True)
            await conn.execute(
                """UPDATE tracking.runs SET status = coalesce($2, status),
                       end_time = coalesce($3, end_time), run_name = coalesce($4, run_name)
                   WHERE run_id = $1""",
                run_uuid,
                status,
                None if end_time_ms is None else end_time_ms or now_ms(),
                run_name or None,
            )
            return run_info(await _info_row(conn, project, run_uuid))

    async def set_lifecycle(self, project: str, run_id: str, stage: LifecycleStage) -> None:
        """Soft delete or restore; a run a garbage collection has begun removing is not
        restored (it would come back with part of its history), nor one of a deleted
        experiment (it would read deleted still, and be collected with it).

        A run of a deleted experiment reads deleted already, so deleting it changes
        nothing, as deleting a deleted run does: marked deleted on its own, it would stay
        deleted when the experiment is restored (MLflow's restore brings back every run)
        and go at the next garbage collection. The experiment is held until the
        transaction ends, so its delete or restore waits rather than slip in between."""
        run_uuid = uuid.UUID(run_id)
        async with self._pool.acquire() as conn, conn.transaction():
            experiment = await _lock_experiment(conn, project, run_uuid)
            # Before the experiment's stage: restoring a deleted experiment, as
            # EXPERIMENT_DELETED advises, would not bring a claimed run back.
            if stage == LifecycleStage.ACTIVE and experiment and experiment["run_claimed"]:
                raise _being_purged(run_id)
            if experiment is not None and experiment["lifecycle_stage"] != LifecycleStage.ACTIVE:
                if stage == LifecycleStage.DELETED:
                    return
                raise _restore_refused(run_uuid, experiment)
            found = await conn.fetchval(
                f"""UPDATE tracking.runs SET lifecycle_stage = $3, {delete_time("$3")}
                    WHERE project = $1 AND run_id = $2
                      AND ($3 = {int(LifecycleStage.DELETED)} OR purge_time IS NULL)
                    RETURNING 1""",
                project,
                run_uuid,
                stage,
            )
            if found is None and await conn.fetchval(
                """SELECT purge_time IS NOT NULL FROM tracking.runs
                   WHERE project = $1 AND run_id = $2""",
                project,
                run_uuid,
            ):
                raise _being_purged(run_id)
        if found is None:
            raise run_not_found(run_id)


def _being_purged(run_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        "RUN_BEING_PURGED",
        f"run {run_id} cannot be restored: a garbage collection has begun removing it for good",
        metadata={"run_id": run_id},
    )


async def _lock_experiment(
    conn: asyncpg.Connection, project: str, run_id: uuid.UUID
) -> asyncpg.Record | None:
    """The run's experiment (lifecycle_stage, experiment_claimed), held so until the
    transaction ends: its delete and restore (FOR UPDATE) wait; and whether a garbage
    collection has claimed the run (run_claimed). None for a missing run, which is left
    to the caller."""
    return await conn.fetchrow(
        f"""SELECT e.lifecycle_stage, {EXPERIMENT_CLAIMED}, r.purge_time IS NOT NULL AS run_claimed
           FROM tracking.runs r JOIN tracking.experiments e USING (experiment_id)
           WHERE r.project = $1 AND r.run_id = $2
           FOR KEY SHARE OF e""",
        project,
        run_id,
    )


def _restore_refused(run_id: uuid.UUID, experiment: asyncpg.Record) -> FailedPrecondition:
    """Why the run of the deleted experiment (a _lock_experiment row) is not restored:
    EXPERIMENT_BEING_PURGED once a garbage collection has claimed the experiment, else
    EXPERIMENT_DELETED."""
    if experiment["experiment_claimed"]:
        return experiment_being_purged(run_id=run_id.hex)
    return FailedPrecondition(
        "EXPERIMENT_DELETED",
        f"the experiment of run {run_id.hex} is deleted; restore the experiment "
        "first (which brings back its runs not deleted on their own), then this run",
        metadata={"run_id": run_id.hex},
    )


async def lock_writable(
    conn: asyncpg.Connection, project: str, run_id: uuid.UUID, *, updating: bool = False
) -> None:
    """Checks the run exists and may be written; holds it, and its experiment, against
    a concurrent delete (as the write statements do: write_statements._CHECK_AND_CLAIM).
    A run a garbage collection has claimed is not found (UNCLAIMED), as it reads.

    A caller that goes on to update the run's own row says so (updating): it takes the
    row's update lock at once, since two holders of a share lock that both upgrade it
    deadlock."""
    row = await conn.fetchrow(
        f"""SELECT r.lifecycle_stage AS run_stage, e.lifecycle_stage AS experiment_stage,
                {EXPERIMENT_CLAIMED}
            FROM tracking.runs r JOIN tracking.experiments e USING (experiment_id)
            WHERE r.project = $1 AND r.run_id = $2 AND {UNCLAIMED}
            FOR {"NO KEY UPDATE" if updating else "SHARE"} OF r FOR KEY SHARE OF e""",
        project,
        run_id,
    )
    check_writable(run_id, row)


def check_writable(run_id: uuid.UUID, row: asyncpg.Record | None) -> None:
    """Raises unless row (run_stage, experiment_stage, experiment_claimed) says the run
    may be written; no row is a run not found (or claimed by a garbage collection:
    UNCLAIMED). A deleted experiment a collection has claimed answers
    EXPERIMENT_BEING_PURGED, before RUN_DELETED too: neither restore can be done."""
    if row is None:
        raise run_not_found(run_id.hex)
    if row["experiment_stage"] != LifecycleStage.ACTIVE and row["experiment_claimed"]:
        raise experiment_being_purged(run_id=run_id.hex)
    if row["run_stage"] != LifecycleStage.ACTIVE:
        raise FailedPrecondition(
            "RUN_DELETED",
            f"run {run_id.hex} is deleted; restore it before writing to it",
            metadata={"run_id": run_id.hex},
        )
    if row["experiment_stage"] != LifecycleStage.ACTIVE:
        raise FailedPrecondition(
            "EXPERIMENT_DELETED",
            f"the experiment of run {run_id.hex} is deleted; restore it before writing",
            metadata={"run_id": run_id.hex},
        )


async def load_runs(conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> list[Run]:
    """Runs with their latest metrics, params, tags and inputs."""
    return (await load_page(conn, rows)).runs()


def run_not_found(run_id: str) -> NotFound:
    return NotFound("RUN_NOT_FOUND", f"run {run_id} not found", metadata={"run_id": run_id})


def experiment_being_purged(
    *, experiment_id: int | None = None, run_id: str | None = None
) -> FailedPrecondition:
    """The refusal of a write to, or a restore of, a deleted experiment a garbage
    collection has claimed (its purge_time), or of a run of it (run_id, where the call
    names a run). EXPERIMENT_DELETED's "restore it" would lead nowhere: the restore is
    refused too, since the experiment would come back without the runs already gone."""
    if run_id is None:
        subject, metadata = f"experiment {experiment_id}", {"experiment_id": str(experiment_id)}
    else:
        subject, metadata = f"the experiment of run {run_id}", {"run_id": run_id}
    return FailedPrecondition(
        "EXPERIMENT_BEING_PURGED",
        f"{subject} is deleted and a garbage collection is removing it for good; "
        "it cannot be restored",
        metadata=metadata,
    )


async def _info_row(conn: asyncpg.Connection, project: str, run_id: uuid.UUID) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"""SELECT {RUN_COLUMNS} FROM {RUN_FROM}
            WHERE r.project = $1 AND r.run_id = $2 AND {UNCLAIMED}""",
        project,
        run_id,
    )
    if row is None:
        raise run_not_found(run_id.hex)
    return row


async def _existing_run(conn: asyncpg.Connection, project: str, run_id: str) -> None:
    found = await conn.fetchval(
        f"SELECT 1 FROM tracking.runs r WHERE r.project = $1 AND r.run_id = $2 AND {UNCLAIMED}",
        project,
        uuid.UUID(run_id),
    )
    if found is None:
        raise NotFound(
            "RUN_NOT_FOUND", f"parent run {run_id} not found", metadata={"run_id": run_id}
        )


async def _active_experiment_location(
    conn: asyncpg.Connection, project: str, experiment_id: int
) -> str:
    row = await conn.fetchrow(
        f"""SELECT e.lifecycle_stage, e.artifact_location, {EXPERIMENT_CLAIMED}
           FROM tracking.experiments e
           WHERE e.project = $1 AND e.experiment_id = $2 FOR SHARE""",
        project,
        experiment_id,
    )
    if row is None:
        raise NotFound(
            "EXPERIMENT_NOT_FOUND",
            f"experiment {experiment_id} not found",
            metadata={"experiment_id": str(experiment_id)},
        )
    if row["lifecycle_stage"] != LifecycleStage.ACTIVE:
        if row["experiment_claimed"]:
            raise experiment_being_purged(experiment_id=experiment_id)
        raise FailedPrecondition(
            "EXPERIMENT_DELETED", f"experiment {experiment_id} is deleted; restore it first"
        )
    return str(row["artifact_location"])


def now_ms() -> int:
    """The server's time in milliseconds since 1970: a run's start or end, or a point's
    time, when the caller leaves it to the server."""
    return time.time_ns() // 1_000_000
