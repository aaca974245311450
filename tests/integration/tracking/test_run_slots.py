"""Writes racing to one run hold at most a quarter of the pool's connections: each waited
for the others in PostgreSQL holding one, so that the writes to a run another
transaction held took every connection, and every other call of the server waited for
the pool until it was UNAVAILABLE (DATABASE_BUSY)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import numpy as np

import cairn
from cairn_server.common import database
from cairn_server.common.config import Config
from cairn_server.common.write_slots import WriteSlots
from cairn_server.tracking.model import Batch, MetricColumns, MetricPoint
from cairn_server.tracking.store import sizes
from cairn_server.tracking.store.writes import RunWriter
from tests.conftest import (
    answered_beside_waiters,
    serving_on_own_pool,
    with_overrides,
)

POOL_SIZE = 8
KEYS = [f"loss{n}" for n in range(10)]
POINTS_PER_KEY = 500


class HoldersCountingPool:
    """A pool that counts how many of its connections are held at once, at most."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.held = self.most_held = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._pool.acquire() as conn:
            self.held += 1
            self.most_held = max(self.most_held, self.held)
            try:
                yield conn
            finally:
                self.held -= 1


def _batch(n: int) -> Batch:
    """Points of every key of KEYS, the same keys in every batch: each waits in
    PostgreSQL for the one before on the keys' latest points."""
    count = len(KEYS) * POINTS_PER_KEY
    return Batch(
        MetricColumns(
            keys=KEYS,
            key_indexes=np.repeat(np.arange(len(KEYS), dtype=np.uint32), POINTS_PER_KEY),
            values=np.full(count, float(n)),
            steps=np.tile(np.arange(POINTS_PER_KEY, dtype=np.int64), len(KEYS)),
            timestamps_ms=np.full(count, 1_000 + n, dtype=np.int64),
        )
    )


async def test_writes_racing_to_one_run_hold_a_quarter_of_the_pool(
    config: Config, tracking: cairn.TrackingClient, run_id: str
) -> None:
    pool = await database.create_pool(
        config.database_url, with_overrides(config, db_pool_size=POOL_SIZE, db_pool_min_size=0)
    )
    counting = HoldersCountingPool(pool)
    writer = RunWriter(
        cast(asyncpg.Pool, counting),
        sizes.bound_for(config.max_message_bytes),
        WriteSlots.for_pool(POOL_SIZE),
    )
    try:
        await asyncio.gather(
            *(writer.log_batch("default", run_id, _batch(n)) for n in range(20)),
            *(
                writer.log_metric("default", run_id, MetricPoint("acc", n, 1, n), None, b"")
                for n in range(20)
            ),
        )
    finally:
        await database.close_pool(pool)

    assert counting.most_held == POOL_SIZE // 4
    history = await tracking.get_metric_history(run_id, KEYS[0])
    assert len(history) == 20 * POINTS_PER_KEY
    assert len(await tracking.get_metric_history(run_id, "acc")) == 20


async def test_writes_waiting_for_a_run_another_transaction_holds_leave_the_pool_to_others(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    async with (
        serving_on_own_pool(config, ["tracking"], POOL_SIZE, db_acquire_timeout_seconds=1) as port,
        cairn.TrackingClient.insecure_connection("127.0.0.1", port) as client,
    ):
        experiment_id = await client.create_experiment(f"held-{unique}")
        run_id = (await client.create_run(experiment_id)).info.run_id
        async with pool.acquire() as holder, holder.transaction():
            await holder.execute(  # as a delete of the run does, until it commits
                "SELECT FROM tracking.runs WHERE run_id = $1::uuid FOR UPDATE", run_id
            )
            writes = asyncio.gather(
                *(client.log_metric(run_id, "loss", n, step=n) for n in range(POOL_SIZE)),
                # Recorded by their request ids: they take turns before the call's
                # connection.
                *(client.set_tag(run_id, f"t{n}", "v") for n in range(POOL_SIZE)),
            )
            # get_experiment was UNAVAILABLE. All sixteen have come meanwhile; a quarter of
            # the pool waits in PostgreSQL (all of it did), the rest in the server.
            found, waiting = await answered_beside_waiters(
                pool, POOL_SIZE // 4, client.get_experiment(experiment_id), "writes waiting"
            )

        await writes
        history = await client.get_metric_history(run_id, "loss")
        run = await client.get_run(run_id)

    assert found.experiment_id == experiment_id
    assert waiting == POOL_SIZE // 4
    assert sorted(point.step for point in history) == list(range(POOL_SIZE))
    assert run.data.tags == {f"t{n}": "v" for n in range(POOL_SIZE)}


async def test_writes_to_the_runs_of_a_held_experiment_leave_a_quarter_of_the_pool(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    """A write waits for a transaction holding its run's experiment (a delete of it):
    writes to four of its runs held a quarter of the pool each, all of it together."""
    async with (
        serving_on_own_pool(config, ["tracking"], POOL_SIZE, db_acquire_timeout_seconds=1) as port,
        cairn.TrackingClient.insecure_connection("127.0.0.1", port) as client,
    ):
        experiment_id = await client.create_experiment(f"held-{unique}")
        other = await client.create_experiment(f"other-{unique}")
        runs = [(await client.create_run(experiment_id)).info.run_id for _ in range(4)]
        async with pool.acquire() as holder, holder.transaction():
            await holder.execute(
                "SELECT FROM tracking.experiments WHERE experiment_id = $1 FOR UPDATE",
                int(experiment_id),
            )
            writes = asyncio.gather(
                *(client.log_metric(run, "loss", n, step=n) for run in runs for n in range(4))
            )
            # get_experiment was UNAVAILABLE. Every admitted write is waited for, however
            # slowly the writes come.
            found, waiting = await answered_beside_waiters(
                pool, POOL_SIZE - POOL_SIZE // 4, client.get_experiment(other), "writes waiting"
            )

        await writes

    assert found.experiment_id == other
    assert waiting == POOL_SIZE - POOL_SIZE // 4
