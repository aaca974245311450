"""Garbage collection across real server processes sharing one PostgreSQL: killed with
SIGKILL in the middle, its operation is taken over and completed by the next server;
two servers alive at once never both run it."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pgserver
import pytest

import cairn
from cairn.exceptions import NotFoundError
from cairn.types import OperationState
from tests.conftest import eventually
from tests.e2e.conftest import ServerProcess, start_server

# Longer than the lease (services/operations/runner.py): a takeover needs it to pass.
TAKEOVER_SECONDS = 60


@pytest.fixture(scope="module")
def database(own_postgres: pgserver.PostgresServer) -> str:
    return own_postgres.get_uri()


@pytest.fixture
def servers(tmp_path: Path, database: str) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []

    def start(name: str, **env: str) -> ServerProcess:
        data_dir = tmp_path / name
        data_dir.mkdir()
        server = start_server(data_dir, env={"CAIRN_DATABASE_URL": database, **env})
        started.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=10)


@pytest.fixture
async def db(database: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database)
    yield conn
    await conn.close()


def _client(server: ServerProcess) -> cairn.Client:
    return cairn.Client(f"http://{server.address}", timeout=30)


async def _deleted_experiment(client: cairn.Client, name: str, runs: int) -> str:
    experiment_id = await client.tracking.create_experiment(name)
    for _ in range(runs):
        run_id = (await client.tracking.create_run(experiment_id)).info.run_id
        await client.tracking.log_param(run_id, "lr", "0.1")
    await client.tracking.delete_experiment(experiment_id)
    return experiment_id


async def test_an_operation_cut_off_by_sigkill_is_finished_by_the_next_server(
    servers, db: asyncpg.Connection, unique: str
) -> None:
    first = servers("first")
    async with _client(first) as client:
        experiment_id = await _deleted_experiment(client, f"restart-{unique}", runs=5)
        # The test holds the experiments' tags: the runs go, then deleting the
        # experiment (whose tags go with it) blocks, well within the statement timeout.
        lock = db.transaction()
        await lock.start()
        await db.execute("LOCK TABLE tracking.experiment_tags IN ACCESS EXCLUSIVE MODE")
        started = await client.operations.start_garbage_collection(datetime.timedelta(0))
        await eventually(lambda: _runs_purged(client, started.name, 5), what="the runs purged")
    first.process.kill()
    first.process.wait(timeout=10)
    await lock.rollback()

    second = servers("second")
    async with _client(second) as client:
        done = await client.operations.wait_operation(started.name, timeout=TAKEOVER_SECONDS)
        assert done.state is OperationState.SUCCEEDED, done.errors
        # Resumed after partial progress: the first server's runs, the second's experiment.
        assert (done.counts["runs"], done.counts["experiments"]) == (5, 1)
        with pytest.raises(NotFoundError):
            await client.tracking.get_experiment(experiment_id)
    row = await db.fetchrow(
        "SELECT attempts, outages FROM operations.operations WHERE operation_id = $1",
        started.name.removeprefix("operations/"),
    )
    # Begun by the first server, then taken over once: its lease ran out, not handed
    # back, which counts as an attempt an outage cut short.
    assert (row["attempts"], row["outages"]) == (2, 1)


async def test_two_live_servers_never_both_run_an_operation(
    servers, db: asyncpg.Connection, unique: str
) -> None:
    # The lock below blocks the collection's first statement for about 20 s; a
    # statement timeout well above that keeps it blocked, not failed, meanwhile.
    patient = {"CAIRN_DB_STATEMENT_TIMEOUT_SECONDS": "120"}
    first, second = servers("first", **patient), servers("second", **patient)
    async with _client(first) as client:
        await _deleted_experiment(client, f"pair-{unique}", runs=2)
        async with db.transaction():
            await db.execute("LOCK TABLE tracking.experiments IN ACCESS EXCLUSIVE MODE")
            started = await client.operations.start_garbage_collection(datetime.timedelta(0))
            operation_id = started.name.removeprefix("operations/")
            # Held past several leases: the first server keeps renewing its lease, so
            # the second, asking every few seconds, never takes the operation.
            await eventually(
                lambda: _held_longer_than(db, operation_id, seconds=25),
                timeout=TAKEOVER_SECONDS,
                what="the lease renewed past 25 s",
            )
        done = await client.operations.wait_operation(started.name, timeout=TAKEOVER_SECONDS)
        assert done.state is OperationState.SUCCEEDED, done.errors
    assert second.process.poll() is None
    row = await db.fetchrow(
        "SELECT attempts, end_time FROM operations.operations WHERE operation_id = $1",
        operation_id,
    )
    assert row["attempts"] == 1 and row["end_time"] is not None


async def _runs_purged(client: cairn.Client, name: str, runs: int) -> bool:
    """Whether the operation has begun and purged the runs. It starts PENDING, RUNNING
    once its server picks it up, and cannot end while the test holds its lock."""
    operation = await client.operations.get_operation(name)
    assert operation.state in (OperationState.PENDING, OperationState.RUNNING), operation
    return operation.state is OperationState.RUNNING and operation.counts.get("runs") == runs


async def _held_longer_than(db: asyncpg.Connection, operation_id: str, seconds: float) -> bool:
    held = await db.fetchval(
        """SELECT lease_until - create_time > $2 * interval '1 second'
           FROM operations.operations WHERE operation_id = $1""",
        operation_id,
        seconds,
    )
    return bool(held)
