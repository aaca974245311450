"""A server checks the database's migrations against its own before it serves: it
refuses a database that lacks any (never migrated, or migrated by an older release),
waits for migrations another process is applying, and warns of a newer release's."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from cairn_server import catalog
from cairn_server.common import database, migrations, server
from cairn_server.common.config import Config
from cairn_server.common.service import Unservable
from cairn_server.tracking import SPEC as TRACKING
from tests.conftest import eventually, with_overrides

SERVICES = catalog.select([])
SCHEMAS = [spec.schema for spec in SERVICES]
TRACKING_FILES = migrations.discover(TRACKING.migrations_dir)
# What the message says of a tracking schema never migrated: how many, first ... last.
TRACKING_LACKS_ALL = (
    f"the tracking schema lacks {len(TRACKING_FILES)} migrations, "
    f"{TRACKING_FILES[0].name} ... {TRACKING_FILES[-1].name}"
)


@pytest_asyncio.fixture
async def fresh_pool(fresh_url: str, config: Config) -> AsyncIterator[asyncpg.Pool]:
    pool = await database.create_pool(fresh_url, config)
    try:
        yield pool
    finally:
        await database.close_pool(pool)


async def test_a_database_never_migrated_is_refused_naming_every_schema_and_cairn_migrate(
    fresh_pool: asyncpg.Pool,
) -> None:
    with pytest.raises(Unservable) as refused:
        await migrations.check(fresh_pool, SERVICES)
    message = str(refused.value)
    for schema in SCHEMAS:
        assert f"the {schema} schema lacks" in message
    assert TRACKING_LACKS_ALL in message
    assert "cairn migrate" in message and "CAIRN_MIGRATE_ON_START=true" in message
    # The check only reads: it made no schema (nor a ledger) of its own.
    made = await fresh_pool.fetchval(
        "SELECT count(*) FROM pg_namespace WHERE nspname = ANY($1::text[])", SCHEMAS
    )
    assert made == 0


async def test_a_database_of_an_older_release_is_refused_naming_what_it_lacks(
    fresh_pool: asyncpg.Pool,
) -> None:
    """Every schema migrated but tracking's last two, as the release before left it."""
    async with fresh_pool.acquire() as conn:
        for spec in SERVICES:
            files = migrations.discover(spec.migrations_dir)
            await migrations.apply(conn, spec.schema, files[:-2] if spec is TRACKING else files)
    with pytest.raises(Unservable) as refused:
        await migrations.check(fresh_pool, SERVICES)
    message = str(refused.value)
    last_two = ", ".join(m.name for m in TRACKING_FILES[-2:])
    assert f"the tracking schema lacks {last_two}." in message
    assert [schema for schema in SCHEMAS if f"the {schema} schema" in message] == ["tracking"]


async def test_a_migrated_database_passes_in_silence(fresh_pool: asyncpg.Pool) -> None:
    await server.migrate(fresh_pool, SERVICES)
    with capture_logs() as logged:
        await migrations.check(fresh_pool, SERVICES)
    assert [entry for entry in logged if entry["log_level"] != "debug"] == []


async def test_migrations_of_a_newer_release_are_warned_of_and_served(
    fresh_pool: asyncpg.Pool,
) -> None:
    """An older image (a rollback, or an old pod restarting during a rolling update)
    serves a schema migrated further, loudly: docs/deploy.md, "Upgrades"."""
    await server.migrate(fresh_pool, SERVICES)
    await fresh_pool.execute(
        "INSERT INTO tracking.schema_migrations (version, name) "
        "VALUES (99, '0099_from_a_newer_release')"
    )
    with capture_logs() as logged:
        await migrations.check(fresh_pool, SERVICES)
    warnings = [entry for entry in logged if entry["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["event"] == "the database holds migrations newer than this server"
    assert warnings[0]["schema"] == "tracking"
    assert warnings[0]["unknown"] == ["0099_from_a_newer_release"]


async def test_migrations_another_process_is_applying_are_waited_for(
    fresh_url: str, fresh_pool: asyncpg.Pool
) -> None:
    """A server started while the migrate Job (or a replica) migrates does not take the
    migrations not yet applied for missing: it reads once they are all applied."""
    migrating = await asyncpg.connect(fresh_url)
    try:
        await migrating.execute("SELECT pg_advisory_lock($1)", migrations.ADVISORY_LOCK_KEY)
        with capture_logs() as logged:
            checking = asyncio.create_task(migrations.check(fresh_pool, SERVICES))
            await eventually(lambda: _waits_for_advisory_lock(migrating), what="check waits")
        assert not checking.done()
        for spec in SERVICES:  # apply() takes the lock again: session locks nest
            files = migrations.discover(spec.migrations_dir)
            await migrations.apply(migrating, spec.schema, files)
        await migrating.execute("SELECT pg_advisory_unlock($1)", migrations.ADVISORY_LOCK_KEY)
        await asyncio.wait_for(checking, timeout=30)
    finally:
        await migrating.close()
    assert "waiting for the migrations another process is applying" in [
        entry["event"] for entry in logged
    ]


async def test_a_check_waits_for_every_schema_a_migration_run_applies(
    fresh_url: str, fresh_pool: asyncpg.Pool, config: Config
) -> None:
    """A run of `cairn migrate` held the lock schema by schema: a check waiting for it
    woke between the first schema and the next, and refused the database, naming the
    migrations the run was about to apply."""
    first = SCHEMAS[0]
    blocker = await asyncpg.connect(fresh_url)
    migrating = await database.create_pool(fresh_url, config)
    try:
        # The run's first schema waits on its ledger, which the blocker holds.
        await blocker.execute(f'CREATE SCHEMA "{first}"')
        await blocker.execute(
            f"""CREATE TABLE "{first}".schema_migrations (version integer PRIMARY KEY,
                name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute(f'LOCK TABLE "{first}".schema_migrations IN ACCESS EXCLUSIVE MODE')
        running = asyncio.create_task(server.migrate(migrating, SERVICES))
        await eventually(lambda: _waits_for_a_table(blocker), what="the run waits")
        checking = asyncio.create_task(migrations.check(fresh_pool, SERVICES))
        await eventually(lambda: _waits_for_advisory_lock(blocker), what="the check waits")
        await holding.commit()
        await asyncio.wait_for(running, timeout=60)
        await asyncio.wait_for(checking, timeout=30)  # raised Unservable before
    finally:
        await blocker.close()
        await database.close_pool(migrating)


async def _waits_for_a_table(conn: asyncpg.Connection) -> bool:
    waiting = await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'relation' AND NOT granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    return bool(waiting)


async def _waits_for_advisory_lock(conn: asyncpg.Connection) -> bool:
    waiting = await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    return bool(waiting)


async def test_a_server_that_does_not_migrate_refuses_a_database_never_migrated(
    config: Config, fresh_url: str
) -> None:
    """CAIRN_MIGRATE_ON_START=false, as on Kubernetes: the server does not start (before,
    it served, answering INTERNAL to every call that touched a missing table)."""
    unmigrated = with_overrides(config, database_url=fresh_url, migrate_on_start=False)
    # A server that started would serve until stopped: the timeout fails the test.
    with pytest.raises(Unservable, match=re.escape(TRACKING_LACKS_ALL)):
        async with asyncio.timeout(60):
            await server.run(unmigrated, SERVICES)


async def test_a_run_cancelled_while_it_waits_for_migrations_leaves_nothing_waiting(
    config: Config, fresh_url: str
) -> None:
    """run() cancelled by its caller (a timeout around an in-process server) before it
    serves: its startup step is cancelled with it. Before, the step went on waiting for
    the migrations' lock in PostgreSQL, and a task waiting for signals stayed behind."""
    blocker = await asyncpg.connect(fresh_url)
    try:
        await blocker.execute("SELECT pg_advisory_lock($1)", migrations.ADVISORY_LOCK_KEY)
        before = asyncio.all_tasks()
        running = asyncio.create_task(
            server.run(with_overrides(config, database_url=fresh_url), SERVICES)
        )
        await eventually(lambda: _waits_for_advisory_lock(blocker), what="the run waits")
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(running, timeout=30)
        # No step, no signal waiter: of the tasks of the loop's other servers (a
        # session's), any started meanwhile is none of these.
        left = {
            getattr(task.get_coro(), "__qualname__", "") for task in asyncio.all_tasks() - before
        }
        assert not left & {"_prepare", "SignalWaiter.wait"}, left

        async def given_up() -> bool:  # PostgreSQL confirms the cancel a moment later
            return not await _waits_for_advisory_lock(blocker)

        await eventually(given_up, what="the migrations' lock no longer waited for")
    finally:
        await blocker.close()
