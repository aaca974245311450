"""A client closed by one task while others use it: each caller gets its answer or
ClientClosedError, and a run being logged to ends, never waits for ever. grpc cancels
the calls of a closed channel, and its bare CancelledError passed `except CairnError`
by, stopped a run's sender as if cancelled, and left its logger waiting."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

import cairn
from cairn._clients.active_run import ActiveRun
from cairn.exceptions import ClientClosedError
from tests.conftest import eventually


@pytest.fixture
async def own(server_port: int) -> AsyncIterator[cairn.TrackingClient]:
    """A client of the test's own, which the test closes."""
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as client:
        yield client


async def _waiting_for(pool: asyncpg.Pool) -> bool:
    """Whether a statement waits for a run's row, which the test holds."""
    return bool(
        await pool.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE wait_event_type = 'Lock' AND query LIKE '%tracking.runs%'"""
        )
    )


async def test_a_call_in_flight_when_another_task_closes_the_client_gets_client_closed(
    own: cairn.TrackingClient, experiment_id: str, pool: asyncpg.Pool
) -> None:
    run_id = (await own.create_run(experiment_id)).info.run_id
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT 1 FROM tracking.runs WHERE run_id = $1 FOR UPDATE", uuid.UUID(run_id)
        )
        call = asyncio.create_task(own.log_metric(run_id, "m", 1.0))
        await eventually(lambda: _waiting_for(pool), what="the call waits")
        await own.close()
        with pytest.raises(ClientClosedError):
            await call


async def test_a_run_whose_client_is_closed_meanwhile_raises_client_closed(
    own: cairn.TrackingClient, experiment_id: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    run = own.start_run(
        experiment_id, batch_size=10, max_buffered=20, flush_timeout=5, journal_dir=tmp_path
    )
    with pytest.raises(ClientClosedError):  # the block's end raises it too
        await _log_while_closed(own, run, pool)
    # What was not stored is in the run's journal.
    assert run.journal is not None and run.journal.parent == tmp_path


async def _log_while_closed(own: cairn.TrackingClient, run: ActiveRun, pool: asyncpg.Pool) -> None:
    async with run:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT 1 FROM tracking.runs WHERE run_id = $1 FOR UPDATE",
                uuid.UUID(run.run_id),
            )
            for step in range(10):  # a batch, which the sender sends and waits on
                await run.log_metric("m", 1.0, step=step)
            await eventually(lambda: _waiting_for(pool), what="the send waits")
            await own.close()
        with pytest.raises(ClientClosedError):
            async with asyncio.timeout(30):  # it waited for room for ever
                for step in range(10, 100):
                    await run.log_metric("m", 1.0, step=step)
        with pytest.raises(ClientClosedError):
            await run.flush()
