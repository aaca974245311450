"""PostgreSQL stopped and started under a served instance: calls answer UNAVAILABLE
with a stable reason (never INTERNAL), health follows the database, a busy pool answers
at once rather than at the caller's deadline, and writes are not retried blindly."""

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import cairn
from cairn.exceptions import CairnError, UnavailableError
from cairn_server import catalog
from cairn_server.common import database
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer, migrate
from tests.conftest import eventually, stop_postgres, with_overrides


@pytest.fixture
async def served(own_postgres, config: Config) -> AsyncIterator[tuple[int, object]]:
    settings = with_overrides(
        config, database_url=own_postgres.get_uri(), db_pool_size=3, db_acquire_timeout_seconds=0.5
    )
    pool = await database.create_pool(settings.database_url, settings)
    await migrate(pool, catalog.select([]))
    server = CairnServer(settings, catalog.select([]), pool)
    port = await server.start()
    try:
        yield port, pool
    finally:
        await asyncio.to_thread(own_postgres.ensure_postgres_running)
        await server.stop(grace=1.0)
        await database.close_pool(pool)


async def _health(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
    return reply.status


async def test_an_outage_is_unavailable_and_turns_health_not_serving(
    served, own_postgres, unique: str
) -> None:
    port, _ = served
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", port, timeout=10) as tracking:
        experiment_id = await tracking.create_experiment(f"outage-{unique}")
        assert await _health(port) == health_pb2.HealthCheckResponse.SERVING
        await asyncio.to_thread(stop_postgres, own_postgres)
        for call in (
            tracking.get_experiment(experiment_id),
            tracking.create_run(experiment_id),
        ):
            with pytest.raises(UnavailableError) as raised:
                await call
            assert raised.value.reason in ("DATABASE_UNAVAILABLE", "DATABASE_BUSY")
        await eventually(
            lambda: _is(port, health_pb2.HealthCheckResponse.NOT_SERVING),
            what="health NOT_SERVING",
        )
        await asyncio.to_thread(own_postgres.ensure_postgres_running)
        await eventually(
            lambda: _is(port, health_pb2.HealthCheckResponse.SERVING), what="health SERVING"
        )

        async def answers() -> bool:
            try:
                return (await tracking.get_experiment(experiment_id)).experiment_id == (
                    experiment_id
                )
            except CairnError:
                return False

        await eventually(answers, what="calls answered again")


async def _is(port: int, status: int) -> bool:
    return await _health(port) == status


async def _set_read_only(url: str, read_only: bool) -> None:
    """The whole server read-only, as the connections to a primary demoted in a
    failover find it (every session's next transaction is read-only)."""
    conn = await asyncpg.connect(url)
    try:
        value = "on" if read_only else "off"
        await conn.execute(f"ALTER SYSTEM SET default_transaction_read_only = {value}")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def test_a_database_that_takes_no_writes_is_unavailable_and_not_serving(
    served, own_postgres, unique: str
) -> None:
    port, _ = served
    url = own_postgres.get_uri()
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", port, timeout=10) as tracking:
        experiment_id = await tracking.create_experiment(f"read-only-{unique}")
        await _set_read_only(url, True)

        async def refused_read_only() -> bool:
            # A reload reaches each session at its next command, signalled a moment
            # later: a write may still go through before it.
            try:
                await tracking.create_run(experiment_id)
            except UnavailableError as error:
                assert error.reason == "DATABASE_READ_ONLY"
                return True
            return False

        try:
            await eventually(refused_read_only, what="a write refused as read-only")
            await eventually(
                lambda: _is(port, health_pb2.HealthCheckResponse.NOT_SERVING),
                what="health NOT_SERVING",
            )
        finally:
            await _set_read_only(url, False)
        await eventually(
            lambda: _is(port, health_pb2.HealthCheckResponse.SERVING), what="health SERVING"
        )
        assert (await tracking.create_run(experiment_id)).info.experiment_id == experiment_id


async def test_a_busy_pool_answers_unavailable_before_the_deadline(served, unique: str) -> None:
    port, pool = served
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", port) as tracking:
        experiment_id = await tracking.create_experiment(f"busy-{unique}")
        held = [await pool.acquire(timeout=5) for _ in range(3)]
        try:
            with pytest.raises(UnavailableError) as raised:
                await tracking.get_experiment(experiment_id, timeout=30)
            assert raised.value.reason == "DATABASE_BUSY"
        finally:
            for conn in held:
                await pool.release(conn)
        assert (await tracking.get_experiment(experiment_id)).experiment_id == experiment_id


async def test_writers_through_a_restart_store_every_acknowledged_write_once(
    served, own_postgres, unique: str
) -> None:
    port, _ = served
    writers, per_writer = 8, 60
    acknowledged: set[tuple[int, int]] = set()
    refused: dict[str, int] = {}
    halfway = asyncio.Event()

    async def writer(n: int, tracking: cairn.TrackingClient, run_id: str) -> None:
        for i in range(per_writer):
            if n == 0 and i == per_writer // 3:
                halfway.set()
            try:
                await tracking.log_metric(run_id, f"w{n}", float(i), step=i)
                acknowledged.add((n, i))
            except CairnError as error:
                refused[f"{error.code.name} {error.reason}"] = (
                    refused.get(f"{error.code.name} {error.reason}", 0) + 1
                )

    async with cairn.TrackingClient.insecure_connection("127.0.0.1", port, timeout=10) as tracking:
        run_id = (
            await tracking.create_run(await tracking.create_experiment(f"w-{unique}"))
        ).info.run_id

        async def outage() -> None:
            await halfway.wait()
            await asyncio.to_thread(stop_postgres, own_postgres)
            # The outage lasts until writers have met it, then PostgreSQL comes back.
            await eventually(lambda: sum(refused.values()) >= writers, what="writes refused")
            await asyncio.to_thread(own_postgres.ensure_postgres_running)

        await asyncio.gather(outage(), *(writer(n, tracking, run_id) for n in range(writers)))
        stored = []
        for n in range(writers):
            stored += [(n, m.step) for m in await tracking.get_metric_history(run_id, f"w{n}")]
    assert len(stored) == len(set(stored))  # nothing twice
    assert acknowledged <= set(stored)  # nothing acknowledged lost
    assert set(refused) <= {"UNAVAILABLE DATABASE_UNAVAILABLE", "UNAVAILABLE DATABASE_BUSY"}
