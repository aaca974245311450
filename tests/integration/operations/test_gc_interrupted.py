"""A garbage collection that loses its database connection in the middle of a step
(PostgreSQL itself up, as in a failover or a dropped route) is handed back and resumed
from what is left, as after a server's restart, and succeeds; it does not end FAILED.
Each attempt so cut short rests longer before the next, and the last one allowed
fails the operation."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import socket
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

import cairn
from cairn.exceptions import NotFoundError, OperationTimeoutError, UnavailableError
from cairn.types import Operation, OperationState
from cairn_server import catalog
from cairn_server.common import database
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer, migrate
from cairn_server.operations import runner
from tests.conftest import Restartable, eventually, new_project, serving, with_overrides
from tests.proxy import PostgresProxy

HOUR = datetime.timedelta(hours=1)
TRACKING_STEP = rb"SELECT count\(\*\) FROM tracking\.runs"  # the tracking step's first
# The artifacts step's first after it drained a location: removing the bytes it let go.
BYTES_REMOVED = rb"SELECT storage_key FROM artifacts\.garbage"


@pytest.fixture
async def pool(own_postgres, config: Config) -> AsyncIterator[asyncpg.Pool]:
    """A database of the module's own: counts are of every project, and on the shared
    one another test's server could drain a location between two attempts."""
    pool = await database.create_pool(own_postgres.get_uri(), config)
    await migrate(pool, catalog.select([]))
    yield pool
    await database.close_pool(pool)


@pytest.fixture
async def proxy(own_postgres, pool: asyncpg.Pool) -> AsyncIterator[PostgresProxy]:
    proxy = PostgresProxy(own_postgres.get_uri())
    yield proxy
    await proxy.close()


@pytest.fixture
async def client(config: Config, proxy: PostgresProxy, unique: str) -> AsyncIterator[cairn.Client]:
    """A client of a server whose database connections go through the proxy, in a
    project with a run deleted two hours ago."""
    # No background janitor: only the collection runs the statements cut on.
    settings = with_overrides(
        config, database_url=await proxy.start(), artifact_janitor_interval_seconds=0
    )
    own_pool = await database.create_pool(settings.database_url, settings)
    server = CairnServer(settings, catalog.select([]), own_pool)
    port = await server.start()
    try:
        project = await new_project(port, f"gc-cut-{unique}")
        async with cairn.Client(f"http://127.0.0.1:{port}", project=project) as client:
            yield client
    finally:
        await server.stop(grace=1.0)
        await database.close_pool(own_pool)


async def _deleted_run(client: cairn.Client, pool: asyncpg.Pool, *texts: str) -> str:
    """A run deleted two hours ago, with an artifact of each of texts."""
    tracking = client.tracking
    found = await tracking.get_experiment_by_name("e")
    experiment_id = found.experiment_id if found else await tracking.create_experiment("e")
    run_id = (await tracking.create_run(experiment_id)).info.run_id
    for number, text in enumerate(texts):
        await tracking.log_text(run_id, text, f"{number}.txt")
    await tracking.delete_run(run_id)
    await pool.execute(
        """UPDATE tracking.runs SET delete_time = delete_time - interval '2 hours'
           WHERE run_id = $1::text::uuid""",
        run_id,
    )
    return run_id


async def _row(pool: asyncpg.Pool, name: str) -> asyncpg.Record:
    return await pool.fetchrow(
        """SELECT owner, attempts, outages, end_time, lease_until - clock_timestamp() AS rest
           FROM operations.operations WHERE operation_id = $1::text::uuid""",
        name.removeprefix("operations/"),
    )


async def test_a_connection_lost_mid_step_is_resumed_not_failed(
    client: cairn.Client, proxy: PostgresProxy, pool: asyncpg.Pool
) -> None:
    run_id = await _deleted_run(client, pool)
    proxy.cut_on(TRACKING_STEP)
    started = await client.operations.start_garbage_collection(HOUR)
    done = await client.operations.wait_operation(started.name, timeout=30)
    assert proxy.cuts
    assert done.state is OperationState.SUCCEEDED, done.errors
    assert done.counts["runs"] >= 1
    with pytest.raises(NotFoundError):
        await client.tracking.get_run(run_id)


async def test_what_an_attempt_cut_short_removed_is_counted(
    client: cairn.Client, proxy: PostgresProxy, pool: asyncpg.Pool
) -> None:
    """The artifacts that went before the cut are counted by the attempt that removed
    them: the takeover finds them gone."""
    cleared = await client.operations.start_garbage_collection(HOUR)  # what others left
    await client.operations.wait_operation(cleared.name, timeout=30)
    texts = [["a" * 100, "b" * 200], ["c" * 400, "d" * 800]]
    for run_texts in texts:
        await _deleted_run(client, pool, *run_texts)
    proxy.cut_on(BYTES_REMOVED)
    started = await client.operations.start_garbage_collection(HOUR)
    done = await client.operations.wait_operation(started.name, timeout=30)
    assert len(proxy.cuts) == 1
    assert done.state is OperationState.SUCCEEDED, done.errors
    assert (await _row(pool, started.name))["attempts"] == 2
    assert done.counts["runs"] == 2
    assert done.counts["artifact_locations"] == 2
    assert done.counts["artifact_objects"] == 4
    assert done.counts["artifact_bytes"] == 1500


async def test_an_attempt_cut_short_rests_its_retry_delay_before_the_next(
    client: cairn.Client,
    proxy: PostgresProxy,
    pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner, "RETRY_SECONDS", 3600.0)  # no server takes it over meanwhile
    monkeypatch.setattr(runner, "RETRY_MAX_SECONDS", 7200.0)
    await _deleted_run(client, pool)
    proxy.cut_on(TRACKING_STEP)
    started = await client.operations.start_garbage_collection(HOUR)

    async def handed_back() -> bool:
        return (await _row(pool, started.name))["owner"] is None

    await eventually(handed_back, what="the attempt cut short handed back")
    row = await _row(pool, started.name)
    assert (row["attempts"], row["outages"], row["end_time"]) == (1, 1, None)
    # Lengthened at random by up to RETRY_JITTER, so a herd cut short together spreads.
    assert datetime.timedelta(minutes=59) < row["rest"] <= HOUR * (1 + runner.RETRY_JITTER)
    await pool.execute(
        """UPDATE operations.operations SET lease_until = clock_timestamp()
           WHERE operation_id = $1::text::uuid""",
        started.name.removeprefix("operations/"),
    )  # its delay over: the next attempt completes it
    done = await client.operations.wait_operation(started.name, timeout=30)
    assert done.state is OperationState.SUCCEEDED, done.errors


async def test_the_last_attempt_cut_short_fails_the_operation_saying_so(
    client: cairn.Client,
    proxy: PostgresProxy,
    pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner, "MAX_OUTAGES", 1)
    await _deleted_run(client, pool)
    proxy.cut_on(TRACKING_STEP)
    started = await client.operations.start_garbage_collection(HOUR)
    done = await client.operations.wait_operation(started.name, timeout=30)
    assert len(proxy.cuts) == 1
    assert done.state is OperationState.FAILED
    [message] = done.errors
    assert message.startswith("the operation failed: outages cut short its attempts (1)")


def test_retry_delays_double_up_to_their_bound() -> None:
    delays = [runner.retry_delay(outages).total_seconds() for outages in range(1, 11)]
    assert delays == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert sum(delays[: runner.MAX_OUTAGES - 1]) == 810  # 13.5 minutes of outage


async def test_an_attempt_handed_back_by_a_stopping_server_counts_no_outage(
    config: Config, pool: asyncpg.Pool, client: cairn.Client, unique: str
) -> None:
    """A server stopped (SIGTERM, a deploy) hands its operations back: the takeover
    that follows is no outage, however many deploys an operation lives through."""
    await _deleted_run(client, pool)
    async with pool.acquire() as holder, holder.transaction():
        # The tracking step waits on the lock: the first attempt is under way when its
        # server stops.
        await holder.execute("LOCK TABLE tracking.runs IN SHARE MODE")
        async with serving(config, pool, []) as port, _client_of(port, client.project) as own:
            started = await own.operations.start_garbage_collection(HOUR)

            async def running() -> bool:
                operation = await own.operations.get_operation(started.name)
                return operation.state is OperationState.RUNNING

            await eventually(running, what="the first attempt running")
    done = await client.operations.wait_operation(started.name, timeout=30)
    assert done.state is OperationState.SUCCEEDED, done.errors
    row = await _row(pool, started.name)
    assert (row["attempts"], row["outages"]) == (2, 0)


async def _waiting_on_held_collection(
    own: cairn.Client, holder: asyncpg.Connection, timeout: float
) -> asyncio.Future[Operation]:
    """A wait of timeout seconds on a collection that holder's lock keeps running,
    once the wait has seen the operation."""
    await holder.execute("LOCK TABLE tracking.runs IN SHARE MODE")
    started = await _running_collection(own)
    seen: list[Operation] = []
    waiter = asyncio.ensure_future(
        own.operations.wait_operation(started.name, timeout, seen.append, report_every=0.1)
    )
    await eventually(lambda: bool(seen), what="the wait seeing the operation")
    return waiter


async def test_a_wait_goes_on_through_its_server_restarting(
    config: Config, pool: asyncpg.Pool, client: cairn.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A wait (and so `cairn gc --wait`) follows its operation through a restart of its
    server: the operation is handed back and carries on. Before, the wait raised
    UnavailableError (connection refused) a second into the restart, though the
    operation went on to succeed."""
    await _deleted_run(client, pool)
    async with _client_of_restarted(config, pool, client.project) as (own, restarted):
        async with pool.acquire() as holder, holder.transaction():
            waiter = await _waiting_on_held_collection(own, holder, 60)
            await restarted.stop()
        caplog.set_level(logging.INFO, "cairn")

        def asked_again() -> bool:  # past the channel's own retries, into the outage
            return sum("again" in r.getMessage() for r in caplog.records) >= 2

        await eventually(asked_again, what="the wait asking again through the outage")
        await restarted.start()
        done = await waiter
    assert done.state is OperationState.SUCCEEDED, done.errors


async def test_a_wait_whose_server_stays_away_times_out(
    config: Config, pool: asyncpg.Pool, client: cairn.Client
) -> None:
    """A wait whose server goes away for longer than its timeout raises
    OperationTimeoutError with the operation as last seen, as when the operation is
    slow. Before, it raised UnavailableError within a second of the server stopping."""
    await _deleted_run(client, pool)
    async with (
        _client_of_restarted(config, pool, client.project) as (own, restarted),
        pool.acquire() as holder,
        holder.transaction(),
    ):
        waiter = await _waiting_on_held_collection(own, holder, 3.0)
        await restarted.stop()
        with pytest.raises(OperationTimeoutError) as timed_out:
            await waiter
    # As last seen: running, or handed back (PENDING) by its server as it stopped.
    last = timed_out.value.operation
    assert last.state in (OperationState.RUNNING, OperationState.PENDING)
    assert last.end_time is None


async def test_a_wait_at_an_address_where_no_server_listens_fails_at_once() -> None:
    """Outages were waited through from the first call, with no timeout for ever: a
    mistyped address or port (or TLS against a plaintext server) hung, where every
    other call fails at once saying so."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    async with cairn.OperationsClient.insecure_connection("127.0.0.1", port) as nowhere:
        with pytest.raises(UnavailableError):
            await asyncio.wait_for(
                nowhere.wait_operation(f"operations/{uuid.uuid4()}", timeout=None), 30
            )


@contextlib.asynccontextmanager
async def _client_of_restarted(
    config: Config, pool: asyncpg.Pool, project: str
) -> AsyncIterator[tuple[cairn.Client, Restartable]]:
    """A client of a server the test may restart."""
    server = Restartable(config, pool)
    await server.start()
    try:
        async with _client_of(server.port, project) as own:
            yield own, server
    finally:
        await server.stop()


async def _running_collection(client: cairn.Client) -> Operation:
    started = await client.operations.start_garbage_collection(HOUR)

    async def running() -> bool:
        operation = await client.operations.get_operation(started.name)
        return operation.state is OperationState.RUNNING

    await eventually(running, what="the collection running")
    return started


def _client_of(port: int, project: str) -> cairn.Client:
    return cairn.Client(f"http://127.0.0.1:{port}", project=project)
