"""Settings a DBA gives the database role do not reach the statements of the server's
calls: its guards are the pool's own (docs/deploy.md, "Failures")."""

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

import cairn
from cairn.types import Param
from cairn_server import catalog
from cairn_server.common import database
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer, migrate
from tests.conftest import eventually, with_overrides

# Far shorter than any wait for a lock the test holds.
_ROLE_LOCK_TIMEOUT_MS = 50


@pytest.fixture
async def role_lock_timeout(own_postgres) -> AsyncIterator[str]:
    """The database's URL, its role given a lock_timeout every new session takes."""
    url = own_postgres.get_uri()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"ALTER ROLE CURRENT_USER SET lock_timeout = {_ROLE_LOCK_TIMEOUT_MS}")
        yield url
    finally:
        await conn.execute("ALTER ROLE CURRENT_USER RESET lock_timeout")
        await conn.close()


@pytest.fixture
async def served(role_lock_timeout: str, config: Config) -> AsyncIterator[int]:
    settings = with_overrides(config, database_url=role_lock_timeout)
    pool = await database.create_pool(settings.database_url, settings)
    await migrate(pool, catalog.select([]))
    server = CairnServer(settings, catalog.select([]), pool)
    port = await server.start()
    try:
        yield port
    finally:
        await server.stop(grace=1.0)
        await database.close_pool(pool)


async def _waited_past_role_timeout(conn: asyncpg.Connection) -> bool:
    """Whether a session has waited for conn's lock well past the role's lock_timeout."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return bool(
        await conn.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))
                 AND clock_timestamp() - query_start > $1 * interval '1 ms'""",
            4 * _ROLE_LOCK_TIMEOUT_MS,
        )
    )


async def test_a_write_waits_for_a_lock_whatever_the_role_lock_timeout(
    served: int, role_lock_timeout: str, unique: str
) -> None:
    """A write waiting for another's lock past the role's lock_timeout was cancelled by
    it and answered INTERNAL (LockNotAvailableError); 6 in 24 concurrent batches on one
    run were, with the role's 5 ms. It now waits, as for any lock, within the statement
    timeout, and is stored once the lock is let go."""
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", served, timeout=30) as client:
        run_id = (await client.create_run(await client.create_experiment(unique))).info.run_id
        holder = await asyncpg.connect(role_lock_timeout)
        try:
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute(
                "SELECT 1 FROM tracking.run_sizes WHERE run_id = $1::uuid FOR UPDATE", run_id
            )
            write = asyncio.ensure_future(client.log_batch(run_id, params=[Param("p", "1")]))
            await eventually(
                lambda: write.done() or _waited_past_role_timeout(holder),
                what="the write ended or waited past the role's lock_timeout",
            )
            await transaction.rollback()
            await write
        finally:
            await holder.close()
        assert (await client.get_run(run_id)).data.params == {"p": "1"}
