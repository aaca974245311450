"""PostgreSQL behind a network partition (a black-holed route: nothing answers, nothing
refuses): health turns NOT_SERVING and stays so while the partition lasts, though the
pool's waits for a connection then time out as a busy pool's do, and turns SERVING
again once the database answers. A pool that is only busy leaves health SERVING."""

import asyncio
import threading
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import cairn
from cairn._headers import REQUEST_ID_HEADER
from cairn.exceptions import UnavailableError
from cairn_server import catalog, cli
from cairn_server.auth.cache import key_cache
from cairn_server.auth.store import AuthStore
from cairn_server.common import database, watch
from cairn_server.common.config import Config
from cairn_server.common.server import STOP_MARGIN_SECONDS, CairnServer
from tests.conftest import eventually, with_overrides
from tests.proxy import PostgresProxy

# Two probes of 0.1 + 0.3 s, with room; at the default settings two take 6 s.
PROBES_DECIDE_SECONDS = 3.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
async def served(
    config: Config, pool: asyncpg.Pool
) -> AsyncIterator[tuple[int, PostgresProxy, asyncpg.Pool]]:
    """All services, their database through a proxy; probes ten times a second, each
    given 0.3 s (CAIRN_HEALTH_PROBE_*: 1 s and 2 s by default), so that the test takes
    seconds."""
    proxy = PostgresProxy(config.database_url)
    settings = with_overrides(
        config,
        database_url=await proxy.start(),
        db_pool_size=3,
        db_acquire_timeout_seconds=0.3,
        health_probe_interval_seconds=0.1,
        health_probe_timeout_seconds=0.3,
    )
    own_pool = await database.create_pool(settings.database_url, settings)
    server = CairnServer(settings, catalog.select([]), own_pool)
    port = await server.start()
    try:
        yield port, proxy, own_pool
    finally:
        proxy.heal()
        await server.stop(grace=1.0)
        await database.close_pool(own_pool)
        await proxy.close()


async def _health(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
    return reply.status


async def test_health_is_not_serving_for_as_long_as_a_partition_lasts(served, unique) -> None:
    port, proxy, _ = served
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", port) as tracking:
        experiment_id = await tracking.create_experiment(f"partitioned-{unique}")
        assert await _health(port) == SERVING
        proxy.partition()
        await eventually(
            lambda: _is(port, NOT_SERVING), PROBES_DECIDE_SECONDS, "health NOT_SERVING"
        )
        # The pool's connections from before may never be answered: none is lent again,
        # and a call answers UNAVAILABLE, the database out of reach (not a busy pool),
        # rather than wait out its deadline on one.
        with pytest.raises(UnavailableError) as raised:
            await tracking.get_experiment(experiment_id, timeout=30)
        assert raised.value.reason == "DATABASE_UNAVAILABLE"
        # Three seconds more, thirty probes: the pool's waits for a connection time out
        # meanwhile, as a busy pool's do, and health must not take that for one.
        for _ in range(30):
            assert await _health(port) == NOT_SERVING
            await asyncio.sleep(0.1)
        proxy.heal()
        await eventually(lambda: _is(port, SERVING), what="health SERVING")
        assert (await tracking.get_experiment(experiment_id)).experiment_id == experiment_id


async def test_calls_a_partition_caught_answer_unavailable_once_health_says_so(
    served, unique
) -> None:
    """Calls whose statements the partition caught waited for it to end (in a real one,
    until TCP gave up, ~15 min), each holding a connection of the pool: only idle ones
    were replaced. They answer UNAVAILABLE (DATABASE_UNAVAILABLE) once the probes find
    the database out of reach; a retry under the same request id, after, applies the
    write once."""
    port, proxy, own_pool = served
    # Connections open in the pool, for the calls to take once the partition began.
    for conn in [await own_pool.acquire(timeout=5) for _ in range(3)]:
        await own_pool.release(conn)
    names = [f"caught-{i}-{unique}" for i in range(2)]
    request_ids = [[(REQUEST_ID_HEADER, f"request-of-{name}")] for name in names]
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", port) as tracking:
        proxy.partition()
        calls = [
            asyncio.ensure_future(tracking.create_experiment(name, timeout=60, metadata=ids))
            for name, ids in zip(names, request_ids, strict=True)
        ]
        _, waiting = await asyncio.wait(calls, timeout=PROBES_DECIDE_SECONDS + 5)
        for call in waiting:
            call.cancel()
        assert not waiting, "calls caught in the partition still wait for it"
        for call in calls:
            error = call.exception()
            assert isinstance(error, UnavailableError), repr(error)
            assert error.reason == "DATABASE_UNAVAILABLE"
        proxy.heal()
        await eventually(lambda: _is(port, SERVING), what="health SERVING")
        for name, ids in zip(names, request_ids, strict=True):
            experiment_id = await tracking.create_experiment(name, metadata=ids)
            assert (await tracking.get_experiment(experiment_id)).name == name


async def test_a_call_caught_as_a_partition_comes_back_soon_after_healing_answers_unavailable(
    served, unique
) -> None:
    """The probes dropped the pool's connections only as health turned NOT_SERVING.
    Healed a moment, calls were served over connections the pool opened anew while
    health, two probes from changing, still said NOT_SERVING; partitioned again, a call
    caught on one waited out its whole deadline (in a real partition, ~15 min)."""
    port, proxy, _ = served
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", port) as tracking:
        experiment_id = await tracking.create_experiment(f"flapping-{unique}")
        proxy.partition()
        await eventually(
            lambda: _is(port, NOT_SERVING), PROBES_DECIDE_SECONDS, "health NOT_SERVING"
        )
        proxy.heal()
        assert (await tracking.get_experiment(experiment_id, timeout=5)).name
        proxy.partition()
        caught = asyncio.ensure_future(tracking.get_experiment(experiment_id, timeout=60))
        done, _ = await asyncio.wait({caught}, timeout=PROBES_DECIDE_SECONDS + 5)
        if not done:
            caught.cancel()
        assert done, "a call caught in the partition still waits for it"
        error = caught.exception()
        assert isinstance(error, UnavailableError), repr(error)
        assert error.reason == "DATABASE_UNAVAILABLE"


async def test_a_call_between_statements_as_a_partition_is_found_answers_unavailable(
    served,
) -> None:
    """The connection a call holds between two statements is dropped under it too: its
    next statement fails as a lost connection does (DATABASE_UNAVAILABLE), rather than
    waiting for the partition to end, or failing as a connection used after its release
    (a bug's INTERNAL)."""
    port, proxy, own_pool = served
    async with own_pool.acquire() as conn:
        assert await conn.fetchval("SELECT 1") == 1
        proxy.partition()
        await eventually(
            lambda: _is(port, NOT_SERVING), PROBES_DECIDE_SECONDS, "health NOT_SERVING"
        )
        with pytest.raises(asyncpg.InterfaceError) as raised:
            await conn.fetchval("SELECT 1", timeout=5)
        answer = database.domain_error(raised.value)
        assert answer is not None and answer.reason == "DATABASE_UNAVAILABLE", answer


async def test_a_pool_busy_with_calls_leaves_health_serving(served) -> None:
    port, _, own_pool = served
    held = [await own_pool.acquire(timeout=5) for _ in range(3)]
    try:
        for _ in range(12):  # a probe every 0.1 s
            assert await _health(port) == SERVING
            await asyncio.sleep(0.1)
    finally:
        for conn in held:
            await own_pool.release(conn)


async def _is(port: int, status: int) -> bool:
    return await _health(port) == status


async def test_a_database_with_every_connection_taken_is_reachable(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    """At its connection limit, PostgreSQL refuses the probe's connection (SQLSTATE
    53300) while the pools' connections serve calls: health stays SERVING. (A role's
    limit here; max_connections answers the same.)"""
    role = f"limited_{unique}".replace("-", "_")
    await pool.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 1')
    try:
        taken = await asyncpg.create_pool(config.database_url, user=role, min_size=1, max_size=1)
        try:
            assert await taken.fetchval("SELECT 1") == 1
            assert await watch._Probe(taken, timeout=2.0).answers()
        finally:
            await taken.close()
    finally:
        await pool.execute(f'DROP ROLE "{role}"')


async def test_shutdown_ends_within_its_grace_while_a_partition_holds_a_statement(
    config: Config,
) -> None:
    """Background work cancelled in the middle of a statement waits for PostgreSQL to
    confirm the cancel, which a partitioned database never does; shutdown leaves it
    behind after the grace period instead of waiting for ever (SIGTERM, then SIGKILL)."""
    proxy = PostgresProxy(config.database_url)
    settings = with_overrides(config, database_url=await proxy.start(), db_pool_size=3)
    own_pool = await database.create_pool(settings.database_url, settings)
    server = CairnServer(settings, catalog.select([]), own_pool)
    await server.start()
    try:
        proxy.partition()
        await eventually(lambda: proxy.held > 0, what="background work caught in the partition")
        stopping = asyncio.ensure_future(server.stop(grace=0.5))
        done, _ = await asyncio.wait({stopping}, timeout=10)
        assert done, "shutdown still waits on the partitioned database"
    finally:
        proxy.heal()
        own_pool.terminate()
        await proxy.close()


async def test_shutdown_with_api_keys_ends_within_its_grace_early_in_a_partition(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    """A partition the health watcher has yet to find leaves the key cache's listening
    connection open; shutdown used to UNLISTEN on it and wait for the answer, which came
    only once the partition healed: the process never exited on SIGTERM."""
    key, _ = await AuthStore(pool).create_key(f"p-{unique}", "k", None, global_admin=True)
    proxy = PostgresProxy(config.database_url)
    settings = with_overrides(config, database_url=await proxy.start(), auth="api_key")
    own_pool = await database.create_pool(settings.database_url, settings)
    server = CairnServer(settings, catalog.select([]), own_pool)
    port = await server.start()
    try:
        async with cairn.TrackingClient.insecure_connection("127.0.0.1", port, key) as tracking:
            await tracking.create_experiment(f"keyed-{unique}")
        assert key_cache(own_pool).listening
        proxy.partition()
        grace = 0.5
        stopping = asyncio.ensure_future(server.stop(grace=grace))
        done, _ = await asyncio.wait({stopping}, timeout=grace + STOP_MARGIN_SECONDS + 1)
        assert done, "shutdown still waits on the partitioned database"
        await asyncio.wait_for(database.close_pool(own_pool), 3 * database.POOL_CLOSE_SECONDS)
    finally:
        proxy.heal()
        own_pool.terminate()
        await proxy.close()


async def test_a_pool_behind_a_partition_closes_within_its_bound(config: Config) -> None:
    """asyncpg's close waits for PostgreSQL to see each connection off, which a partition
    never lets it do; the pool is dropped after POOL_CLOSE_SECONDS instead."""
    proxy = PostgresProxy(config.database_url)
    settings = with_overrides(config, database_url=await proxy.start(), db_pool_min_size=2)
    own_pool = await database.create_pool(settings.database_url, settings)
    try:
        proxy.partition()
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(database.close_pool(own_pool), 3 * database.POOL_CLOSE_SECONDS)
        assert asyncio.get_running_loop().time() - started < 2 * database.POOL_CLOSE_SECONDS
        assert own_pool.is_closing()
    finally:
        proxy.heal()
        own_pool.terminate()
        await proxy.close()


async def test_a_command_ends_though_the_database_is_partitioned_when_it_is_done(
    config: Config,
) -> None:
    """`cairn migrate` and `cairn keys create` closed their pool without a bound: a
    partition arriving as the work ended left the command waiting for ever."""
    proxy = PostgresProxy(config.database_url)
    settings = with_overrides(config, database_url=await proxy.start())
    loop = asyncio.get_running_loop()

    async def work_then_partition(own_pool: asyncpg.Pool) -> int:
        answer = await own_pool.fetchval("SELECT 42")
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_partition(proxy), loop))
        return answer

    # The command runs its own event loop, as from the command line; this one serves the
    # proxy meanwhile. A daemon thread: one left waiting cannot hold the tests' exit.
    outcome: list[int] = []
    command = threading.Thread(
        target=lambda: outcome.append(cli._with_pool(settings, work_then_partition)),
        daemon=True,
    )
    try:
        command.start()
        await eventually(
            lambda: not command.is_alive(), 3 * database.POOL_CLOSE_SECONDS, "the command ended"
        )
        assert outcome == [42]
    finally:
        proxy.heal()
        await proxy.close()


async def _partition(proxy: PostgresProxy) -> None:
    proxy.partition()


@pytest.mark.parametrize("min_size", [0, 2])
async def test_a_pool_opened_behind_a_partition_fails_within_the_connect_bound(
    config: Config, monkeypatch: pytest.MonkeyPatch, min_size: int
) -> None:
    """A server started as its database stops answering says so within the bound, not
    after asyncpg's minute; with no connection to keep open (min size 0), the pool
    still opens one to read its URL, under the same bound."""
    bound = 0.5
    monkeypatch.setattr(database, "CONNECT_TIMEOUT_SECONDS", bound)
    proxy = PostgresProxy(config.database_url)
    settings = with_overrides(config, database_url=await proxy.start(), db_pool_min_size=min_size)
    proxy.partition()
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(database.create_pool(settings.database_url, settings), 20)
        assert asyncio.get_running_loop().time() - started < 10 * bound
    finally:
        await proxy.close()
