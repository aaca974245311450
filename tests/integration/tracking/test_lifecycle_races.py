"""An experiment deleted while its runs are written: each write is ordered before the
delete (the delete waits for it) or refused after it (EXPERIMENT_DELETED), never
stored after the delete was answered. A run of a deleted experiment cannot be restored
on its own, nor deleted on its own (it comes back with the experiment), and a delete or
restore that changes nothing keeps the experiment's time."""

from __future__ import annotations

import asyncio
import datetime
import functools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

import cairn
from cairn.exceptions import FailedPreconditionError
from cairn.types import Metric, OperationState, Param
from tests.conftest import another_transaction, eventually, held_up_in_turn, holds_up_another

WRITES: dict[str, Callable[[cairn.TrackingClient, str], Awaitable[object]]] = {
    "log_metric": lambda t, run: t.log_metric(run, "m", 5.0, step=7),
    "log_batch": lambda t, run: t.log_batch(
        run, metrics=[Metric("m", float(n), 0, n) for n in range(100)], params=[Param("p", "1")]
    ),
    "log_param": lambda t, run: t.log_param(run, "late", "yes"),
    "set_terminated": lambda t, run: t.set_terminated(run, "KILLED"),
}


@pytest.mark.parametrize("write", WRITES)
async def test_a_write_held_up_as_its_experiment_is_deleted_is_refused(
    tracking: cairn.TrackingClient, pool: asyncpg.Pool, unique: str, write: str
) -> None:
    """A write waiting for its run's row (held as an UpdateRun holds it) went on with the
    experiment as it read it before: stored, after the delete was answered."""
    experiment = await tracking.create_experiment(f"held-{write}-{unique}")
    run = (await tracking.create_run(experiment)).info.run_id
    async with another_transaction(pool) as conn:
        await conn.execute(
            "SELECT 1 FROM tracking.runs WHERE run_id = $1 FOR NO KEY UPDATE", uuid.UUID(run)
        )
        held = asyncio.ensure_future(WRITES[write](tracking, run))
        await eventually(lambda: holds_up_another(conn), what="the write waits")
        await tracking.delete_experiment(experiment)
    with pytest.raises(FailedPreconditionError) as refused:
        await held
    assert refused.value.reason == "EXPERIMENT_DELETED"
    stored = await tracking.get_run(run)
    assert stored.data.metrics == stored.data.params == {}
    assert stored.info.status == "RUNNING"


async def _held_mid_write(
    tracking: cairn.TrackingClient, pool: asyncpg.Pool, experiment: str, call: Callable[[], Any]
) -> bool:
    """A param write to a run of the experiment, past its check and waiting for another
    insert of its key, and call() made meanwhile: both, once the insert is rolled back,
    and whether call() ended (True) or waited for the write (False) while it was held."""
    run = (await tracking.create_run(experiment)).info.run_id
    async with another_transaction(pool) as conn:
        await conn.execute(
            "INSERT INTO tracking.params (run_id, key, value) VALUES ($1, 'late', 'other')",
            uuid.UUID(run),
        )
        write = asyncio.ensure_future(tracking.log_param(run, "late", "yes"))
        await eventually(lambda: holds_up_another(conn), what="the write waits")
        made = asyncio.ensure_future(call())

        async def ended_or_waiting() -> bool:
            return made.done() or await held_up_in_turn(conn)

        await eventually(ended_or_waiting, what="the call ends or waits for the write")
        ended_meanwhile = made.done()
    await write
    await made
    assert (await tracking.get_run(run)).data.params == {"late": "yes"}
    return ended_meanwhile


async def test_a_delete_waits_for_the_writes_under_way_in_its_experiment(
    tracking: cairn.TrackingClient, pool: asyncpg.Pool, unique: str
) -> None:
    """A param write past its check, waiting for another insert of its key, was stored
    after the delete had been answered."""
    experiment = await tracking.create_experiment(f"under-way-{unique}")
    delete = functools.partial(tracking.delete_experiment, experiment)
    assert not await _held_mid_write(tracking, pool, experiment, delete)


async def test_an_experiments_tags_are_set_while_writes_to_its_runs_are_under_way(
    tracking: cairn.TrackingClient, pool: asyncpg.Pool, unique: str
) -> None:
    """A tag set locked the experiment as a delete does, so it waited for the writes
    under way, and the writes begun after it waited for it."""
    experiment = await tracking.create_experiment(f"tagged-{unique}")
    tagging = functools.partial(tracking.set_experiment_tag, experiment, "k", "v")
    assert await _held_mid_write(tracking, pool, experiment, tagging)
    assert (await tracking.get_experiment(experiment)).tags == {"k": "v"}


async def test_a_run_of_a_deleted_experiment_is_not_restored_alone(
    tracking: cairn.TrackingClient, unique: str
) -> None:
    """It was answered OK, yet read deleted still, and a garbage collection removed it."""
    experiment = await tracking.create_experiment(f"restore-alone-{unique}")
    run = (await tracking.create_run(experiment)).info.run_id
    await tracking.delete_experiment(experiment)
    with pytest.raises(FailedPreconditionError) as refused:
        await tracking.restore_run(run)
    assert refused.value.reason == "EXPERIMENT_DELETED"
    await tracking.restore_experiment(experiment)
    await tracking.delete_run(run)
    await tracking.restore_run(run)
    assert (await tracking.get_run(run)).info.lifecycle_stage == "active"


async def test_a_run_deleted_while_its_experiment_is_deleted_comes_back_with_it(
    tracking: cairn.TrackingClient, server_port: int, unique: str
) -> None:
    """The delete, answered OK on a run that read deleted already, marked it deleted on
    its own: the experiment's restore left it deleted, and a garbage collection removed it."""
    experiment = await tracking.create_experiment(f"hidden-{unique}")
    run = (await tracking.create_run(experiment)).info.run_id
    await tracking.delete_experiment(experiment)
    assert (await tracking.get_run(run)).info.lifecycle_stage == "deleted"
    await tracking.delete_run(run)
    await tracking.restore_experiment(experiment)
    assert (await tracking.get_run(run)).info.lifecycle_stage == "active"
    assert [found.info.run_id for found in await tracking.search_runs([experiment])] == [run]
    async with cairn.OperationsClient.insecure_connection("127.0.0.1", server_port) as ops:
        started = await ops.start_garbage_collection(datetime.timedelta(0))
        done = await ops.wait_operation(started.name, timeout=60)
    assert done.state is OperationState.SUCCEEDED, done.errors
    assert (await tracking.get_run(run)).info.lifecycle_stage == "active"


async def test_a_delete_or_restore_that_changes_nothing_keeps_the_experiments_time(
    tracking: cairn.TrackingClient, pool: asyncpg.Pool, unique: str
) -> None:
    experiment = await tracking.create_experiment(f"no-change-{unique}")
    await pool.execute(
        """UPDATE tracking.experiments SET last_update_time = '2026-01-01T00:00:00Z'
           WHERE experiment_id = $1""",
        int(experiment),
    )
    await tracking.restore_experiment(experiment)
    assert (await tracking.get_experiment(experiment)).last_update_time == 1_767_225_600_000
    await tracking.delete_experiment(experiment)
    deleted = (await tracking.get_experiment(experiment)).last_update_time
    assert deleted > 1_767_225_600_000
    await tracking.delete_experiment(experiment)
    assert (await tracking.get_experiment(experiment)).last_update_time == deleted
