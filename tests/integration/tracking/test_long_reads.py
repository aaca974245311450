"""Searches of runs, like metric histories, hold at most half the pool's connections:
twelve searches ordered by several params and metrics at once, each sorting every
matching run for seconds, took all ten, and a search of 20 ms waiting behind them took
14 s while the server's own background work found no connection."""

from __future__ import annotations

import asyncio

import asyncpg

import cairn
from cairn_server.common.config import Config
from tests.conftest import (
    answered_beside_waiters,
    serving_on_own_pool,
)

POOL_SIZE = 8
SEARCHES = 12


async def test_searches_waiting_in_the_database_leave_half_the_pool_to_others(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    async with (
        # Turns waited for long enough that no search gives up on a loaded machine.
        serving_on_own_pool(config, ["tracking"], POOL_SIZE, db_acquire_timeout_seconds=30) as port,
        cairn.TrackingClient.insecure_connection("127.0.0.1", port) as client,
    ):
        experiment_id = await client.create_experiment(f"searched-{unique}")
        await client.create_run(experiment_id)
        async with pool.acquire() as holder, holder.transaction():
            # Each search then holds its connection as long as a slow sort would.
            await holder.execute("LOCK TABLE tracking.runs IN ACCESS EXCLUSIVE MODE")
            searches = asyncio.gather(
                *(client.search_runs([experiment_id]) for _ in range(SEARCHES))
            )
            # get_experiment was UNAVAILABLE. All twelve have come meanwhile; half the
            # pool waits in PostgreSQL (all of it did), the rest in the server.
            found, waiting = await answered_beside_waiters(
                pool, POOL_SIZE // 2, client.get_experiment(experiment_id), "searches waiting"
            )

        pages = await searches

    assert found.experiment_id == experiment_id
    assert waiting == POOL_SIZE // 2
    assert [len(page) for page in pages] == [1] * SEARCHES
