"""Searches of runs that sort every matching run, like metric histories, hold at most
half the pool's connections: twelve searches ordered by several params and metrics at
once, each sorting for seconds, took all ten, and a search of 20 ms waiting behind them
took 14 s while the server's own background work found no connection. Searches whose
pages are walked (newest first, or by one metric) cost about their page and wait for no
turn of the sorts: they waited behind them too."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

import cairn
from cairn_server.common.config import Config
from tests.conftest import (
    answered_beside_waiters,
    serving_on_own_pool,
)

POOL_SIZE = 8
SEARCHES = 12
SORTED = ["params.p DESC", "metrics.m"]


async def _experiment(client: cairn.TrackingClient, experiment_id: str) -> object:
    return (await client.get_experiment(experiment_id)).experiment_id


async def _newest_runs(client: cairn.TrackingClient, experiment_id: str) -> object:
    return list(await client.search_runs([experiment_id]))


async def _best_runs(client: cairn.TrackingClient, experiment_id: str) -> object:
    return list(await client.search_runs([experiment_id], order_by=["metrics.m DESC"]))


# The calls asked beside the sorts, of an experiment without runs.
BYSTANDERS: dict[str, Callable[[cairn.TrackingClient, str], Awaitable[object]]] = {
    "get_experiment": _experiment,
    "newest runs": _newest_runs,
    "best runs by a metric": _best_runs,
}


@pytest.mark.parametrize("bystander", BYSTANDERS)
async def test_sorting_searches_waiting_in_the_database_leave_half_the_pool_to_others(
    config: Config, pool: asyncpg.Pool, unique: str, bystander: str
) -> None:
    async with (
        # Turns waited for long enough that no search gives up on a loaded machine.
        serving_on_own_pool(config, ["tracking"], POOL_SIZE, db_acquire_timeout_seconds=30) as port,
        cairn.TrackingClient.insecure_connection("127.0.0.1", port) as client,
    ):
        sorted_id = await client.create_experiment(f"sorted-{unique}")
        await client.create_run(sorted_id)
        # Its page is empty, so the bystander reads no params.
        empty_id = await client.create_experiment(f"empty-{unique}")
        async with pool.acquire() as holder, holder.transaction():
            # Each sort then holds its connection as long as a slow one would.
            await holder.execute("LOCK TABLE tracking.params IN ACCESS EXCLUSIVE MODE")
            searches = asyncio.gather(
                *(client.search_runs([sorted_id], order_by=SORTED) for _ in range(SEARCHES))
            )
            # get_experiment was UNAVAILABLE, and the walked searches too once sorts
            # held turns. All twelve have come meanwhile; half the pool waits in
            # PostgreSQL (all of it did), the rest in the server.
            found, waiting = await answered_beside_waiters(
                pool, POOL_SIZE // 2, BYSTANDERS[bystander](client, empty_id), "sorts waiting"
            )

        pages = await searches

    assert found == (empty_id if bystander == "get_experiment" else [])
    assert waiting == POOL_SIZE // 2
    assert [len(page) for page in pages] == [1] * SEARCHES
