"""A call cancelled in the middle of a statement (its client's deadline passed, say, or
the server stopping) must not leave its connection to the next caller in a state that
fails the next caller's statement."""

from __future__ import annotations

import asyncio
import select
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from cairn_server.common import database
from cairn_server.common.config import Config
from tests.conftest import eventually, with_overrides

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
