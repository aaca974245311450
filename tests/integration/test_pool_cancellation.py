"""A call cancelled in the middle of a statement (its client's deadline passed, say, or
the server stopping) must not leave its connection to the next caller in a state that
fails the next caller's statement, nor its statement running in PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import select
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import grpc
import pytest

import cairn
from cairn.tracking.v1 import tracking_service_pb2 as api
from cairn.tracking.v1 import tracking_service_pb2_grpc as rpc
from cairn_server.common import database
from cairn_server.common.config import Config
from tests.conftest import eventually, status_codes, with_overrides
from tests.proxy import PostgresProxy

STATEMENT_TIMEOUT_SECONDS = 0.3


async def test_a_connection_cancelled_as_its_statement_is_prepared_is_not_lent_again(
    config: Config,
) -> None:
    """Cancelled as the answer to its statement's preparation arrived, a call left its
    connection with the statement unsynced; PostgreSQL kept that statement's timeout
    running, and the next caller's statement failed with it (STATEMENT_TIMEOUT), or the
    pool's close waited for ever on the connection."""
    strict = with_overrides(
        config,
        db_statement_timeout_seconds=STATEMENT_TIMEOUT_SECONDS,
        db_pool_min_size=1,
        db_pool_size=1,
    )
    pool = await database.create_pool(config.database_url, strict)
    clock = await asyncpg.connect(config.database_url)
    try:
        cancelled_on = await _cancelled_as_prepared(pool)
        # Its statement timeout began before this, when PostgreSQL read the Parse.
        prepared_by = await clock.fetchval("SELECT clock_timestamp()")
        # Until the cancelled statement's timeout has run out on PostgreSQL's clock
        # (which fails nothing by itself: only the next message shows it).
        await eventually(
            lambda: _past(clock, prepared_by, STATEMENT_TIMEOUT_SECONDS),
            what="the cancelled statement's timeout over",
        )
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT 1") == 1
            assert conn.get_server_pid() != cancelled_on
    finally:
        await clock.close()
        await database.close_pool(pool)


async def _past(clock: asyncpg.Connection, start: datetime, seconds: float) -> bool:
    query = "SELECT clock_timestamp() > $1::timestamptz + make_interval(secs => $2)"
    return bool(await clock.fetchval(query, start, seconds))


async def _cancelled_as_prepared(pool: asyncpg.Pool) -> int:
    """Runs a statement new to the pool's connection, cancelled in the loop iteration
    that brings its preparation's answer; returns the connection's server pid."""
    held: list[int] = []

    async def statement() -> None:
        async with pool.acquire() as conn:
            held.append(conn.get_server_pid())
            _cancel_when_answered(conn, asyncio.current_task())
            await conn.fetchval("SELECT 40 + 2")

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(statement())
    return held[0]


def _cancel_when_answered(conn: Any, task: asyncio.Task[Any] | None) -> None:
    """Once conn sends its next Parse, waits (blocking the loop) until PostgreSQL's
    answer is readable, then has task cancelled first thing in the next iteration, in
    which the answer is read: the order a cancellation meets the answer in by chance."""
    assert task is not None
    transport = conn._transport
    write = transport.write
    sock = transport.get_extra_info("socket")

    def parse_then_cancel(data: Any) -> None:
        write(data)
        if bytes(data[:1]) == b"P":
            transport.write = write
            readable, _, _ = select.select([sock.fileno()], [], [], 5.0)
            assert readable, "PostgreSQL did not answer the Parse"
            asyncio.get_running_loop().call_soon(task.cancel)

    transport.write = parse_then_cancel


async def test_a_statement_cancelled_out_of_a_transaction_stops_in_postgresql(
    config: Config,
) -> None:
    """A read (no transaction) cancelled as it ran: the connection was closed at once,
    which dropped the cancel request asyncpg was about to send, and PostgreSQL went on
    running the statement until its timeout, on a backend the pool had already
    replaced. Calls that timed out so piled up past the pool until the database
    refused connections to everyone."""
    pool = await database.create_pool(config.database_url, config)
    watcher = await asyncpg.connect(config.database_url)
    sleeping = "SELECT pg_sleep(60) AS cancelled_read"
    try:

        async def read() -> None:
            async with pool.acquire() as conn:
                # Only the cancel request stops it: the check that a client is gone
                # (the pool's backstop, see create_pool) is off here.
                await conn.execute("SET client_connection_check_interval = 0")
                await conn.fetchval(sleeping)

        task = asyncio.create_task(read())
        await eventually(lambda: _running(watcher, sleeping), what="the read running")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Stopped within a moment (PostgreSQL signals the backend), not at its timeout.
        await eventually(
            lambda: _stopped(watcher, sleeping), timeout=10, what="the cancelled read stopped"
        )
    finally:
        await watcher.close()
        await database.close_pool(pool)


@contextlib.asynccontextmanager
async def _read_through_proxy(
    config: Config, statement: str
) -> AsyncIterator[tuple[PostgresProxy, asyncio.Task[None]]]:
    """A read of statement through a proxy to PostgreSQL, running once yielded, with
    the proxy that carries it."""
    proxy = PostgresProxy(config.database_url)
    pool = await database.create_pool(await proxy.start(), config)
    watcher = await asyncpg.connect(config.database_url)

    async def read() -> None:
        async with pool.acquire() as conn:
            await conn.fetchval(statement)

    task = asyncio.create_task(read())
    try:
        await eventually(lambda: _running(watcher, statement), what="the read running")
        yield proxy, task
    finally:
        task.cancel()
        proxy.heal()
        await watcher.close()
        pool.terminate()
        await proxy.close()


async def test_a_statement_whose_cancel_cannot_be_sent_is_still_cancelled(
    config: Config,
) -> None:
    """The cancel request goes over a new connection: refused (the database's Service
    without endpoints, say), asyncpg closed the call's connection itself, and closing it
    again through the pool's wrapper, detached by then, raised InterfaceError in place
    of the cancellation: the call was answered INTERNAL."""
    statement = "SELECT pg_sleep(60) AS cancel_refused"
    async with _read_through_proxy(config, statement) as (proxy, read):
        proxy.refuse_new()
        read.cancel()
        with pytest.raises(asyncio.CancelledError):
            await read


async def test_a_cancellation_returns_without_waiting_for_its_cancel_request(
    config: Config,
) -> None:
    """The cancel request is sent by asyncpg over a new connection, which a partition
    leaves unanswered: the cancelled call waited for it, up to CANCEL_SEND_SECONDS, so a
    timeout around pool work (a stream's re-admission, 2 s at most) ran 2 s over. The
    connection is closed once it is sent, apart from the call."""
    loop = asyncio.get_running_loop()
    statement = "SELECT pg_sleep(60) AS cancel_unanswered"
    async with _read_through_proxy(config, statement) as (proxy, read):
        proxy.partition()
        cancelled_at = loop.time()
        read.cancel()
        with pytest.raises(asyncio.CancelledError):
            await read
        assert loop.time() - cancelled_at < database.CANCEL_SEND_SECONDS


async def test_a_call_cancelled_after_its_connection_was_lost_is_cancelled(
    config: Config,
) -> None:
    """Its connection closed by the database (a restart, a failover), asyncpg had let
    it go already: the cancellation of the call's block raised AttributeError."""
    pool = await database.create_pool(config.database_url, config)
    watcher = await asyncpg.connect(config.database_url)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0), pool.acquire() as conn:
                lost = conn.get_server_pid()
                await watcher.execute("SELECT pg_terminate_backend($1)", lost)
                await eventually(lambda: _let_go(conn), what="the connection lost")
                await asyncio.Event().wait()  # until the timeout cancels the block
    finally:
        await watcher.close()
        await database.close_pool(pool)


async def test_calls_past_their_deadline_leave_no_statement_waiting(
    server_port: int, config: Config, unique: str
) -> None:
    """Reads held up by a lock (a migration's ALTER TABLE, an operator's DDL) whose
    callers' deadlines passed: each left its statement waiting in PostgreSQL, on a
    backend outside the pool's bound, until the statement timeout."""
    calls = config.db_pool_size * 2
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking:
        experiment_id = await tracking.create_experiment(f"deadline-{unique}")
    request = api.GetExperimentRequest(project="default", experiment_id=experiment_id)
    locker = await asyncpg.connect(config.database_url)
    try:
        async with (
            locker.transaction(),
            grpc.aio.insecure_channel(f"127.0.0.1:{server_port}") as channel,
        ):
            await locker.execute("LOCK TABLE tracking.experiments IN ACCESS EXCLUSIVE MODE")
            stub = rpc.TrackingServiceStub(channel)
            codes = await status_codes(
                *(stub.GetExperiment(request, timeout=0.5) for _ in range(calls))
            )
            assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * calls
            await eventually(
                lambda: _none_waiting_on(locker), timeout=10, what="no statement waiting"
            )
    finally:
        await locker.close()
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking:
        assert (await tracking.get_experiment(experiment_id)).experiment_id == experiment_id


async def _none_waiting_on(locker: asyncpg.Connection) -> bool:
    """No backend waits for a lock the locker holds."""
    query = """SELECT count(*) = 0 FROM pg_stat_activity
        WHERE $1 = ANY(pg_blocking_pids(pid))"""
    return bool(await locker.fetchval(query, locker.get_server_pid()))


async def test_pool_connections_notice_a_client_gone_mid_statement(config: Config) -> None:
    """The backstop for a statement whose cancel never arrives (the server's process
    killed): PostgreSQL checks its client is there every second while it runs."""
    pool = await database.create_pool(config.database_url, config)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW client_connection_check_interval") == "1s"
    finally:
        await database.close_pool(pool)


async def _running(conn: asyncpg.Connection, statement: str) -> bool:
    query = "SELECT count(*) > 0 FROM pg_stat_activity WHERE query = $1 AND state = 'active'"
    return bool(await conn.fetchval(query, statement))


async def _stopped(conn: asyncpg.Connection, statement: str) -> bool:
    return not await _running(conn, statement)


def _let_go(conn: Any) -> bool:
    """Whether asyncpg let a lent connection go, closed, from under its wrapper."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:  # "released back to the pool": let go already
        return True
