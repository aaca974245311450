"""The migration runner against the real PostgreSQL."""

import asyncio

import asyncpg
import pytest

from cairn_server.common import migrations
from cairn_server.common.migrations import Migration


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
