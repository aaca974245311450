"""The migration runner against the real PostgreSQL."""

import asyncio
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from structlog.testing import capture_logs

from cairn_server import catalog
from cairn_server.common import migrations
from cairn_server.common.migrations import Migration
from cairn_server.common.service import Unservable
from tests.conftest import eventually
from tests.proxy import PostgresProxy


def _steps(schema: str) -> list[Migration]:
    return [
        Migration(1, "0001_init", "CREATE TABLE things (id bigint PRIMARY KEY);"),
        Migration(2, "0002_more", "INSERT INTO things VALUES (1), (2);"),
    ]


async def test_applies_pending_once(pool: asyncpg.Pool, unique: str) -> None:
    schema = f"m_{unique}"
    async with pool.acquire() as conn:
        assert await migrations.apply(conn, schema, _steps(schema)) == [1, 2]
        assert await migrations.apply(conn, schema, _steps(schema)) == []
        assert await conn.fetchval(f"SELECT count(*) FROM {schema}.things") == 2
        assert await migrations.applied_versions(conn, schema) == {1, 2}


async def test_replicas_starting_together_apply_each_file_once(
    postgres_url: str, unique: str
) -> None:
    schema = f"race_{unique}"
    slow = [Migration(1, "0001_slow", "SELECT pg_sleep(0.3); CREATE TABLE t (id int);")]
    conns = [await asyncpg.connect(postgres_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrations.apply(c, schema, slow) for c in conns))
        # Exactly one replica ran the file; the others waited on the lock, then found it done.
        assert sorted(results) == [[], [], [], [1]]
        count = await conns[0].fetchval(f"SELECT count(*) FROM {schema}.schema_migrations")
        assert count == 1
    finally:
        for conn in conns:
            await conn.close()


async def test_a_failing_file_leaves_no_trace(pool: asyncpg.Pool, unique: str) -> None:
    schema = f"fail_{unique}"
    broken = [
        Migration(1, "0001_ok", "CREATE TABLE a (id int);"),
        Migration(2, "0002_broken", "CREATE TABLE b (id int); SELECT no_such_function();"),
    ]
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.UndefinedFunctionError):
            await migrations.apply(conn, schema, broken)
        assert await migrations.applied_versions(conn, schema) == {1}
        exists = await conn.fetchval("SELECT to_regclass($1)", f"{schema}.b")
        assert exists is None
        # The lock was released: another run goes ahead at once.
        assert await migrations.apply(conn, schema, broken[:1]) == []


@pytest.mark.parametrize("inside_a_transaction", [True, False], ids=["in-a-file", "between-files"])
async def test_a_frozen_migrator_gives_the_lock_up(
    postgres_url: str, unique: str, monkeypatch: pytest.MonkeyPatch, inside_a_transaction: bool
) -> None:
    """A migrator that stops answering (frozen, or its node lost: PostgreSQL sees no closed
    socket) held the migrations' lock, and the locks of the tables it was changing, until
    the kernel's keepalive gave up two hours later; every replica starting waited."""
    monkeypatch.setattr(migrations, "STALLED_AFTER_SECONDS", 1)
    schema = f"frozen_{unique}"
    frozen, other = [await asyncpg.connect(postgres_url) for _ in range(2)]
    try:
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)):
            async with migrations.held(frozen), contextlib.AsyncExitStack() as stack:
                if inside_a_transaction:
                    await stack.enter_async_context(frozen.transaction())
                    await frozen.execute(f"CREATE SCHEMA {schema}")
                # Its client does nothing more while another replica waits to migrate.
                applied = await asyncio.wait_for(
                    migrations.apply(other, schema, _steps(schema)), 20
                )
        assert applied == [1, 2]
        assert await other.fetchval(f"SELECT count(*) FROM {schema}.things") == 2
    finally:
        await other.close()
        frozen.terminate()


async def test_a_migrator_killed_while_its_statement_waits_gives_the_lock_up(
    postgres_url: str, unique: str
) -> None:
    """A migrator killed while a statement of its waited on a lock kept the migrations'
    lock until that statement ended: PostgreSQL saw the closed socket only afterwards."""
    schema = f"killed_{unique}"
    holder, other = [await asyncpg.connect(postgres_url) for _ in range(2)]
    await holder.execute(f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.busy (id int)")
    waiting = f"LOCK TABLE {schema}.busy"
    migrator = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _MIGRATOR, postgres_url, waiting
    )
    try:
        async with holder.transaction():
            await holder.execute(f"LOCK TABLE {schema}.busy")

            async def blocked() -> bool:
                found = """SELECT count(*) FROM pg_stat_activity
                           WHERE query = $1 AND wait_event_type = 'Lock'"""
                return await other.fetchval(found, waiting) == 1

            await eventually(blocked, what="the migrator's statement waiting on the lock")
            migrator.kill()
            await migrator.wait()
            # The table stays locked: only noticing the migrator gone frees its lock.
            applied = await asyncio.wait_for(
                migrations.apply(other, f"{schema}_next", _steps(schema)), 20
            )
        assert applied == [1, 2]
    finally:
        if migrator.returncode is None:
            migrator.kill()
            await migrator.wait()
        await holder.close()
        await other.close()


# A migrator whose statement (argv[2]) waits on a lock of the test's.
_MIGRATOR = """
import asyncio, sys
import asyncpg
from cairn_server.common import migrations

async def main():
    conn = await asyncpg.connect(sys.argv[1])
    async with migrations.held(conn), conn.transaction():
        await conn.execute(sys.argv[2])

asyncio.run(main())
"""


async def test_a_migrator_waiting_for_another_says_so(postgres_url: str, unique: str) -> None:
    """Only a server that did not migrate logged its wait: a migrating one (the default,
    and `cairn migrate`) waited in silence for as long as the other's run took."""
    schema = f"waits_{unique}"
    first, second = [await asyncpg.connect(postgres_url) for _ in range(2)]
    try:
        async with migrations.held(first):
            with capture_logs() as logged:
                waiting = asyncio.create_task(migrations.apply(second, schema, _steps(schema)))
                await eventually(
                    lambda: (
                        "waiting for the migrations another process is applying"
                        in [entry["event"] for entry in logged]
                    ),
                    what="the wait logged",
                )
            assert not waiting.done()
        assert await asyncio.wait_for(waiting, 20) == [1, 2]
    finally:
        await first.close()
        await second.close()


@contextlib.asynccontextmanager
async def _registry_0007_waiting(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A database whose registry schema stops before 0007, whose table registered_models
    a transaction reads from (as a long registry call does) until the block ends: a
    migration run applies registry 0007 and waits there. Yields a connection to watch
    it with."""
    watcher = await asyncpg.connect(url)
    blocker = await asyncpg.connect(url)
    try:
        [registry] = catalog.select(["registry"])[-1:]
        before_0007 = migrations.discover(registry.migrations_dir)[:6]
        await migrations.apply(watcher, registry.schema, before_0007)
        async with blocker.transaction():
            await blocker.execute("SELECT count(*) FROM registry.registered_models")
            yield watcher
    finally:
        await blocker.close()
        await watcher.close()


async def _migrator_waiting_on_0007(watcher: asyncpg.Connection) -> int:
    """The backend of the migration run waiting in registry 0007."""
    waiting = """SELECT pid FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND query LIKE '%key_count%'"""
    await eventually(lambda: watcher.fetchval(waiting), 30, "a migration waiting in registry 0007")
    return await watcher.fetchval(waiting)


async def _cairn(*args: str, database_url: str, **settings: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "CAIRN_DATABASE_URL": database_url, "CAIRN_LOG_FORMAT": "json"}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cairn_server.cli",
        *args,
        env={**env, **settings},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_the_migrate_command_warns_of_a_newer_releases_migrations(
    fresh_url: str, tmp_path: Path
) -> None:
    """An older image's migrate Job run in a rollback: it logged only "migrations up to
    date", where a server of it warns (docs/deploy.md, "Upgrades")."""
    migrating = await _cairn("migrate", "tracking", database_url=fresh_url)
    assert await migrating.wait() == 0
    database = await asyncpg.connect(fresh_url)
    try:
        await database.execute(
            "INSERT INTO tracking.schema_migrations (version, name) VALUES (99, '0099_newer')"
        )
    finally:
        await database.close()
    migrating = await _cairn("migrate", "tracking", database_url=fresh_url)
    _, stderr = await migrating.communicate()
    # The log's lines, not a warning Python printed (platformdirs' under PYTHONWARNINGS).
    logged = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    assert migrating.returncode == 0
    warned = [entry for entry in logged if entry["level"] == "warning"]
    assert [(entry["event"], entry["unknown"]) for entry in warned] == [
        ("the database holds migrations newer than this server", ["0099_newer"])
    ]


@pytest.mark.parametrize(
    "command", [["migrate", "registry"], ["serve", "registry", "--listen-address", "127.0.0.1:0"]]
)
async def test_a_migration_whose_connection_ends_is_one_line(
    fresh_url: str, command: list[str], tmp_path: Path
) -> None:
    """A migrator whose session PostgreSQL ended mid-migration (a failover, an admin)
    ended in a traceback: giving the lock up on the dead connection failed, and that
    error ("connection has been released back to the pool") replaced the one that
    said the connection was lost."""
    async with _registry_0007_waiting(fresh_url) as watcher:
        migrating = await _cairn(
            *command,
            database_url=fresh_url,
            CAIRN_MIGRATE_ON_START="true",
            CAIRN_DATA_DIR=str(tmp_path),
            CAIRN_AUTH="none",
        )
        try:
            migrator = await _migrator_waiting_on_0007(watcher)
            assert await watcher.fetchval("SELECT pg_terminate_backend($1)", migrator)
            _, stderr = await asyncio.wait_for(migrating.communicate(), 30)
        finally:
            if migrating.returncode is None:
                migrating.kill()
                await migrating.wait()
    told = stderr.decode()
    assert migrating.returncode == 1, told
    assert "Traceback" not in told, told
    [line] = told.strip().splitlines()[-1:]
    assert line.startswith(f"cairn {command[0]}: cannot use the database at "), told
    assert f"{urlsplit(fresh_url).path} (--database-url, CAIRN_DATABASE_URL): " in line, told
    # The lost connection's own reason, not a failure to clean up after it.
    assert line.endswith("terminating connection due to administrator command"), told


# The probes of a migration run in the test below: ten a second, each given 0.3 s
# (CAIRN_HEALTH_PROBE_*: 1 s and 2 s by default), so that it takes seconds.
_QUICK_PROBES = {
    "CAIRN_HEALTH_PROBE_INTERVAL_SECONDS": "0.1",
    "CAIRN_HEALTH_PROBE_TIMEOUT_SECONDS": "0.3",
}
# Two probes, the pool's close given up on after 5 s twice (database.close_pool), room.
_PARTITION_TOLD_WITHIN_SECONDS = 15


@pytest.mark.parametrize(
    "command", [["migrate", "registry"], ["serve", "registry", "--listen-address", "127.0.0.1:0"]]
)
async def test_a_migration_cut_off_by_a_partition_is_given_up(
    fresh_url: str, command: list[str], tmp_path: Path
) -> None:
    """A migrator whose database went silent (a network partition: nothing answers,
    nothing refuses) waited for ever: with no statement timeout and no keepalive, the
    k8s Job and every init container hung long after PostgreSQL had rolled its
    migration back."""
    proxy = PostgresProxy(fresh_url)
    try:
        async with _registry_0007_waiting(fresh_url) as watcher:
            migrating = await _cairn(
                *command,
                database_url=await proxy.start(),
                CAIRN_MIGRATE_ON_START="true",
                CAIRN_DATA_DIR=str(tmp_path),
                CAIRN_AUTH="none",
                **_QUICK_PROBES,
            )
            try:
                await _migrator_waiting_on_0007(watcher)
                proxy.partition()
                _, stderr = await asyncio.wait_for(
                    migrating.communicate(), _PARTITION_TOLD_WITHIN_SECONDS
                )
            finally:
                if migrating.returncode is None:
                    migrating.kill()
                    await migrating.wait()
    finally:
        await proxy.close()
    told = stderr.decode()
    assert migrating.returncode == 1, told
    [line] = told.strip().splitlines()[-1:]
    assert line.startswith(
        f"cairn {command[0]}: cannot use the database at 127.0.0.1:{proxy.port}"
    ), told
    assert "Traceback" not in told, told


async def test_a_file_other_than_the_one_applied_at_its_version_is_refused(
    pool: asyncpg.Pool, unique: str, tmp_path: Path
) -> None:
    """A version applied under another name (a different migration of another build, or
    a file renamed) counted as applied: check served the database, and apply skipped the
    file, so its changes were never made."""
    schema = f"named_{unique}"
    async with pool.acquire() as conn:
        await migrations.apply(conn, schema, _steps(schema))
    (tmp_path / "0001_init.sql").write_text(_steps(schema)[0].sql)
    (tmp_path / "0002_other.sql").write_text("CREATE TABLE other (id int);")
    [spec] = catalog.select(["registry"])[-1:]
    other_build = dataclasses.replace(spec, schema=schema, migrations_dir=tmp_path)
    expected = (
        f"the {schema} schema applied 0002_more as its migration 2, where this server's "
        "file is 0002_other"
    )
    with pytest.raises(Unservable, match=expected):
        await migrations.check(pool, [other_build])
    async with pool.acquire() as conn:
        with pytest.raises(Unservable, match=expected):
            await migrations.apply(conn, schema, migrations.discover(tmp_path))
        assert await conn.fetchval("SELECT to_regclass($1)", f"{schema}.other") is None


@pytest.fixture
def quick_lock_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lock waits of 0.2 s and pauses of 0.05 s (3 s and 1 s up to 30 s by default), so
    that the tests below take a second."""
    monkeypatch.setattr(migrations, "LOCK_WAIT_SECONDS", 0.2)
    monkeypatch.setattr(migrations, "LOCK_PAUSE_SECONDS", 0.05)


@contextlib.asynccontextmanager
async def _long_read(postgres_url: str, schema: str) -> AsyncIterator[None]:
    """A transaction that reads schema's table `things` until the block ends (a long
    call of a server of the version before, say)."""
    reader = await asyncpg.connect(postgres_url)
    try:
        async with reader.transaction():
            await reader.execute(f"SELECT count(*) FROM {schema}.things")
            yield
    finally:
        await reader.close()


_ALTER_WAITING = """SELECT count(*) FROM pg_stat_activity
                    WHERE query LIKE 'ALTER TABLE%' AND wait_event_type = 'Lock'"""


async def test_a_migration_behind_a_long_read_holds_no_call_up(
    postgres_url: str, unique: str, quick_lock_waits: None
) -> None:
    """A migration's ALTER TABLE behind a long read waited for it with no bound, and
    every call that touched the table queued behind the ALTER: a 10 s read stalled all
    registry calls for 11.5 s while 0007 waited."""
    schema = f"locked_{unique}"
    altering = Migration(3, "0003_alter", "ALTER TABLE things ADD COLUMN more int;")
    migrator, caller = [await asyncpg.connect(postgres_url) for _ in range(2)]
    try:
        await migrations.apply(migrator, schema, _steps(schema))
        with capture_logs() as logged:
            async with _long_read(postgres_url, schema):
                migrating = asyncio.create_task(
                    migrations.apply(migrator, schema, [*_steps(schema), altering])
                )
                await eventually(
                    lambda: caller.fetchval(_ALTER_WAITING), what="the ALTER waiting on the read"
                )
                # A call that reads the table meanwhile is answered.
                assert await asyncio.wait_for(
                    caller.fetchval(f"SELECT count(*) FROM {schema}.things"), 5
                )
                await eventually(
                    lambda: (
                        "migration waited for a lock; trying again"
                        in [entry["event"] for entry in logged]
                    ),
                    what="the wait logged",
                )
                assert not migrating.done()
            assert await asyncio.wait_for(migrating, 20) == [3]
    finally:
        await migrator.close()
        await caller.close()


async def test_a_migration_that_never_gets_its_lock_fails_saying_so(
    postgres_url: str, unique: str, quick_lock_waits: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrations, "LOCK_TRIES", 3)
    schema = f"never_{unique}"
    altering = Migration(3, "0003_alter", "ALTER TABLE things ADD COLUMN more int;")
    migrator = await asyncpg.connect(postgres_url)
    try:
        await migrations.apply(migrator, schema, _steps(schema))
        with capture_logs() as logged:
            async with _long_read(postgres_url, schema):
                with pytest.raises(
                    Unservable,
                    match=f"migration 0003_alter of the {schema} schema waited 3 times for "
                    "0.2 s for a lock",
                ):
                    await migrations.apply(migrator, schema, [*_steps(schema), altering])
        waits = [entry for entry in logged if entry["event"].startswith("migration waited")]
        assert [entry["attempt"] for entry in waits] == [1, 2]
        assert await migrations.applied_versions(migrator, schema) == {1, 2}
    finally:
        await migrator.close()
