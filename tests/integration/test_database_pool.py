"""The pool keeps one connection ready between calls, and only one that is safe to lend."""

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from cairn_server.common import database
from cairn_server.common.config import Config
from cairn_server.common.errors import Unavailable
from tests.conftest import eventually, with_overrides


@pytest.fixture
async def small_pool(config: Config) -> AsyncIterator[database.BoundedPool]:
    settings = with_overrides(config, db_pool_size=1, db_acquire_timeout_seconds=0.5)
    pool = await database.create_pool(settings.database_url, settings)
    yield pool
    await asyncio.wait_for(pool.close(), 10)  # a kept connection does not hold it open


async def _pid(pool: database.BoundedPool) -> int:
    async with pool.acquire() as conn:
        return int(conn.get_server_pid())


def _gone(conn: asyncpg.Connection) -> bool:
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:  # asyncpg took it back when it broke
        return True


async def test_a_connection_left_clean_is_lent_again_and_counted_idle(
    small_pool: database.BoundedPool,
) -> None:
    first = await _pid(small_pool)
    assert small_pool.ready is not None
    assert small_pool.get_idle_size() == 1
    assert await _pid(small_pool) == first


async def test_a_connection_left_in_a_transaction_or_by_an_error_is_not_kept(
    small_pool: database.BoundedPool,
) -> None:
    async with small_pool.acquire() as conn:
        await conn.execute("BEGIN")
    assert small_pool.ready is None
    async with small_pool.acquire() as conn:
        assert not conn.is_in_transaction()
    with pytest.raises(RuntimeError):
        async with small_pool.acquire():
            raise RuntimeError("a store failed")
    assert small_pool.ready is None


async def test_a_waiting_acquire_gets_the_connection_instead_of_the_pool_keeping_it(
    small_pool: database.BoundedPool,
) -> None:
    holding = small_pool.acquire()
    held = (await holding.__aenter__()).get_server_pid()
    waiter = asyncio.create_task(_pid(small_pool))
    await eventually(lambda: small_pool.waiting == 1, what="the second acquire waiting")
    await holding.__aexit__(None, None, None)
    # Kept instead, the one connection would leave the waiter to DATABASE_BUSY.
    assert await waiter == held


async def test_a_kept_connection_the_server_closed_is_not_lent(
    small_pool: database.BoundedPool, config: Config
) -> None:
    pid = await _pid(small_pool)
    kept = small_pool.ready
    assert kept is not None
    other = await asyncpg.connect(config.database_url)
    try:
        await other.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await other.close()
    await eventually(lambda: _gone(kept), what="asyncpg noticing the closed connection")
    async with small_pool.acquire() as conn:
        assert await conn.fetchval("SELECT 1") == 1
        assert conn.get_server_pid() != pid


async def test_a_busy_pool_still_answers_database_busy(small_pool: database.BoundedPool) -> None:
    async with small_pool.acquire():
        with pytest.raises(Unavailable) as raised:
            async with small_pool.acquire():
                pass
    assert raised.value.reason == "DATABASE_BUSY"


async def test_a_reference_kept_past_its_block_stops_working_as_after_a_release(
    small_pool: database.BoundedPool,
) -> None:
    async with small_pool.acquire() as first:
        pass
    with pytest.raises(asyncpg.InterfaceError):
        await first.fetchval("SELECT 1")
    async with small_pool.acquire() as second:
        assert second is not first and await second.fetchval("SELECT 1") == 1


async def test_a_connection_with_a_listener_is_not_kept(
    small_pool: database.BoundedPool,
) -> None:
    heard: list[str] = []
    async with small_pool.acquire() as conn:
        await conn.add_listener("cairn_pool_test", lambda *args: heard.append(args[-1]))
    assert small_pool.ready is None
    async with small_pool.acquire() as conn:
        await conn.execute("NOTIFY cairn_pool_test, 'for the next caller'")
        assert await conn.fetchval("SELECT 1") == 1
    assert heard == []


async def test_expired_or_long_idle_connections_are_not_lent_again(
    small_pool: database.BoundedPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with small_pool.acquire() as conn:
        pid = conn.get_server_pid()
        await small_pool.expire_connections()
    assert small_pool.ready is None
    assert await _pid(small_pool) != pid

    pid = await _pid(small_pool)
    assert small_pool.ready is not None
    monkeypatch.setattr(small_pool, "_max_inactive_connection_lifetime", 0.0)
    assert await _pid(small_pool) != pid
