"""Cached key checks: used while nothing changes, forgotten the moment anything does."""

from __future__ import annotations

import dataclasses

import asyncpg
import pytest
from structlog.testing import capture_logs

import cairn
from cairn.exceptions import PermissionDeniedError, UnauthenticatedError
from cairn.types import ApiKeyExpirationTime
from cairn_server.auth.cache import RETRY_SECONDS, KeyCache, key_cache
from cairn_server.auth.store import AuthStore, KeyCheck
from cairn_server.common import database
from cairn_server.common.config import Config
from tests.conftest import eventually, with_overrides
from tests.integration.auth.conftest import World, serve
from tests.proxy import PostgresProxy


def _prefix(key: str) -> str:
    return key.split("_")[1]


async def _forgotten_after(cache: KeyCache, change) -> None:
    """Runs a change made outside any server, and waits for its notification. The cache
    listens first: on a loaded machine its first try may have found the pool busy, and
    it tries again some seconds later."""

    async def listening() -> bool:
        await cache.listen()
        return cache.listening

    await eventually(listening, what="the key cache listens for auth changes")
    before = cache.generation
    await change
    await eventually(lambda: cache.generation != before, what="the change notification")


async def test_a_used_key_is_served_from_the_cache(world: World, pool: asyncpg.Pool) -> None:
    cache = key_cache(pool)
    # Notifications arrive in commit order: once this one is in, the world's are too.
    await _forgotten_after(cache, pool.execute("NOTIFY cairn_auth_changed"))
    async with world.tracking("viewer") as viewer:
        await viewer.search_experiments()
    assert cache.get(_prefix(world.keys["viewer"]), world.project) is not None


async def test_a_revocation_from_elsewhere_reaches_the_server(
    world: World, pool: asyncpg.Pool
) -> None:
    cache = key_cache(pool)
    async with world.tracking("editor") as editor:
        await editor.search_experiments()
        await _forgotten_after(
            cache,
            pool.execute(
                "UPDATE auth.api_keys SET revoke_time = now() WHERE prefix = $1",
                _prefix(world.keys["editor"]),
            ),
        )
        with pytest.raises(UnauthenticatedError) as raised:
            await editor.search_experiments()
    assert raised.value.reason == "API_KEY_REVOKED"


async def test_a_role_removed_from_elsewhere_reaches_the_server(
    world: World, pool: asyncpg.Pool
) -> None:
    cache = key_cache(pool)
    async with world.tracking("viewer") as viewer:
        await viewer.search_experiments()
        await _forgotten_after(
            cache,
            pool.execute("DELETE FROM auth.project_roles WHERE project = $1", world.project),
        )
        with pytest.raises(PermissionDeniedError):
            await viewer.search_experiments()


async def test_a_revoked_keys_children_are_refused_by_another_server_too(
    world: World, config: Config
) -> None:
    """The children of a revoked key change in the revoking transaction, whose commit
    makes every listening server forget what it kept, the children's checks included."""
    own_pool = await database.create_pool(config.database_url, config)
    other, other_port = await serve(with_overrides(config, auth="api_key"), own_pool)
    try:
        async with world.auth("editor") as editor:
            child = await editor.create_api_key("child", ApiKeyExpirationTime.THIRTY_DAYS)
        there = cairn.TrackingClient.insecure_connection(
            "127.0.0.1", other_port, child, project=world.project
        )
        async with there:
            await there.search_experiments()
            assert key_cache(own_pool).get(_prefix(child), world.project) is not None
            async with world.auth("editor") as editor:
                await editor.delete_api_key(world.keys["editor"])

            async def refused() -> bool:
                try:
                    await there.search_experiments()
                except UnauthenticatedError as error:
                    return error.reason == "API_KEY_REVOKED"
                return False

            await eventually(refused, what="the child refused on the other server")
    finally:
        await other.stop(grace=0)
        await database.close_pool(own_pool)


async def test_a_check_read_before_a_change_is_not_kept_after_it(
    pool: asyncpg.Pool, unique: str
) -> None:
    now = [0.0]
    cache = KeyCache(pool, max_age=10, clock=lambda: now[0])
    await cache.listen()
    try:
        _, info = await AuthStore(pool).create_key(f"c-{unique}", "k", None)
        check = await AuthStore(pool).check_key(info.prefix, None)
        assert isinstance(check, KeyCheck)
        generation = cache.generation
        cache.forget()
        cache.put(info.prefix, None, check, generation)
        assert cache.get(info.prefix, None) is None
        cache.put(info.prefix, None, check, cache.generation)
        assert cache.get(info.prefix, None) == check
        now[0] = 10
        assert cache.get(info.prefix, None) is None
    finally:
        await cache.close()


async def test_nothing_is_cached_without_a_listener(pool: asyncpg.Pool, unique: str) -> None:
    cache = KeyCache(pool)
    _, info = await AuthStore(pool).create_key(f"n-{unique}", "k", None)
    check = await AuthStore(pool).check_key(info.prefix, None)
    assert check is not None
    cache.put(info.prefix, None, check, cache.generation)
    assert cache.get(info.prefix, None) is None


async def test_a_pool_of_one_connection_is_never_held_for_listening(config, unique: str) -> None:
    tiny = await database.create_pool(
        config.database_url, dataclasses.replace(config, db_pool_min_size=1, db_pool_size=1)
    )
    try:
        cache = KeyCache(tiny)
        await cache.listen()
        assert await tiny.fetchval("SELECT 1") == 1  # the one connection is still free
        _, info = await AuthStore(tiny).create_key(f"t-{unique}", "k", None)
        check = await AuthStore(tiny).check_key(info.prefix, None)
        assert check is not None
        cache.put(info.prefix, None, check, cache.generation)
        assert cache.get(info.prefix, None) is None
        await cache.close()
    finally:
        await database.close_pool(tiny)


async def test_a_clean_close_is_not_reported_as_a_lost_listener(config: Config) -> None:
    """Closing the cache hands its connection back to the pool, which closes it at
    shutdown: that is no loss, while a connection cut under the listener is one."""
    own_pool = await database.create_pool(config.database_url, config)
    try:
        with capture_logs() as logged:
            cache = KeyCache(own_pool)
            await cache.listen()
            assert cache._listener is not None
            await cache.close()
            await database.close_pool(own_pool)
        assert [e for e in logged if "lost" in e["event"]] == []
    finally:
        own_pool.terminate()


async def test_a_listener_cut_off_is_reported(pool: asyncpg.Pool) -> None:
    cache = KeyCache(pool)
    await cache.listen()
    listener = cache._listener
    assert listener is not None
    try:
        with capture_logs() as logged:
            await pool.execute("SELECT pg_terminate_backend($1)", listener.get_server_pid())
            await eventually(lambda: cache._listener is None, what="the loss noticed")
        assert any("lost the auth change listener" in e["event"] for e in logged)
    finally:
        await cache.close()


async def test_a_listener_dropped_with_the_pools_connections_is_lost_and_comes_back(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    """Once its probes find the database out of reach, the health watcher drops every
    connection of the pool, lent ones too (drop_connections), the listener's among
    them. Before, the cache was never told: it went on 'listening' on the closed
    connection, serving checks that a change made elsewhere no longer reached for
    their max_age, never listened again, and kept the connection lent, a pool slot
    short for good and a shutdown held up 5 s by it."""
    now = [0.0]
    own_pool = await database.create_pool(
        config.database_url, with_overrides(config, db_pool_size=2)
    )
    cache = KeyCache(own_pool, clock=lambda: now[0])
    _, info = await AuthStore(pool).create_key(f"d-{unique}", "k", None)
    check = await AuthStore(pool).check_key(info.prefix, None)
    assert check is not None
    try:
        await cache.listen()
        cache.put(info.prefix, None, check, cache.generation)
        with capture_logs() as logged:
            await database.drop_connections(own_pool)
            # At once, though its termination listener runs on the loop's next turn.
            assert not cache.listening
            assert cache.get(info.prefix, None) is None
            # Both slots of the pool lend again, the listener's given back.
            held = [await own_pool.acquire(timeout=5) for _ in range(2)]
            for connection in held:
                await own_pool.release(connection)
        assert any("lost the auth change listener" in e["event"] for e in logged)
        now[0] += RETRY_SECONDS
        await _forgotten_after(cache, own_pool.execute("NOTIFY cairn_auth_changed"))
    finally:
        await cache.close()
        await database.close_pool(own_pool)


async def test_a_listener_whose_connection_goes_silent_is_lost_and_reported(
    config: Config,
) -> None:
    """A connection a NAT or firewall stops forwarding without a reset is never closed:
    the cache listened on it for good, and no change made elsewhere reached it."""
    proxy = PostgresProxy(config.database_url)
    own_pool = await database.create_pool(await proxy.start(), config)
    cache = KeyCache(own_pool)

    async def listening() -> bool:
        await cache.listen()
        return cache.listening

    async def confirmed_since(moment: float) -> bool:
        return await listening() and cache._confirmed_at > moment

    async def lost() -> bool:
        return not await listening()

    try:
        await eventually(listening, what="the key cache listens")
        listened_at = cache._confirmed_at
        await eventually(lambda: confirmed_since(listened_at), what="a healthy one confirmed")
        with capture_logs() as logged:
            proxy.partition()
            await eventually(lost, what="the silent listener taken for lost")
        assert any("lost the auth change listener" in e["event"] for e in logged)
    finally:
        await cache.close()
        proxy.heal()
        own_pool.terminate()
        await proxy.close()
