"""How many rows of a table a store's statements read, from PostgreSQL's own account
(EXPLAIN ANALYZE): a measure of cost that no machine's speed changes."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg


class RecordingPool:
    """A pool whose connections note every statement read with fetch, fetchrow or
    fetchval (and its arguments), to be explained afterwards; everything else goes to
    the real pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[_RecordingConnection]:
        async with self._pool.acquire() as conn:
            yield _RecordingConnection(conn, self.statements)


class _RecordingConnection:
    def __init__(self, conn: asyncpg.Connection, statements: list[Any]) -> None:
        self._conn = conn
        self._statements = statements

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        self._statements.append((sql, args))
        return await self._conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        self._statements.append((sql, args))
        return await self._conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        self._statements.append((sql, args))
        return await self._conn.fetchval(sql, *args)


async def rows_read(
    pool: asyncpg.Pool, statements: list[tuple[str, tuple[Any, ...]]], table: str
) -> int:
    """The rows of table the statements' scans read: those they returned (each loop's)
    and those their filters dropped."""
    total = 0
    async with pool.acquire() as conn:
        for sql, args in statements:
            plan = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args)
            total += read_in(json.loads(plan)[0]["Plan"], table)
    return total


class ExplainingConnection:
    """A connection that explains (ANALYZE) each statement read with fetch, fetchrow or
    fetchval on itself, in the same transaction and so under the same SET LOCALs, before
    running it; the plans are kept (in plans, shared if given) for read_in and scans_of."""

    def __init__(self, conn: asyncpg.Connection, plans: list[dict[str, Any]] | None = None):
        self._conn = conn
        self.plans: list[dict[str, Any]] = [] if plans is None else plans

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def _explain(self, sql: str, args: tuple[Any, ...]) -> None:
        plan = await self._conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args)
        self.plans.append(json.loads(plan)[0]["Plan"])

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        await self._explain(sql, args)
        return await self._conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        await self._explain(sql, args)
        return await self._conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        await self._explain(sql, args)
        return await self._conn.fetchval(sql, *args)


class ExplainingPool:
    """A pool whose connections are ExplainingConnections, their plans all kept in plans."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.plans: list[dict[str, Any]] = []

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[ExplainingConnection]:
        async with self._pool.acquire() as conn:
            yield ExplainingConnection(conn, self.plans)


def scans_of(node: dict[str, Any], table: str) -> list[tuple[str, str | None]]:
    """How the plan reads table: each scan's node type and index (None for none), so
    that a whole secondary index read for a few rows shows too."""
    own = (
        [(node["Node Type"], node.get("Index Name"))] if node.get("Relation Name") == table else []
    )
    return own + [scan for child in node.get("Plans", []) for scan in scans_of(child, table)]


def read_in(node: dict[str, Any], table: str) -> int:
    """The rows of table the plan's scans read (see rows_read)."""
    own = 0
    if node.get("Relation Name") == table:
        own = node["Actual Rows"] * node["Actual Loops"]
        for removed in ("Rows Removed by Filter", "Rows Removed by Index Recheck"):
            own += node.get(removed, 0) * node["Actual Loops"]
    return own + sum(read_in(child, table) for child in node.get("Plans", []))
