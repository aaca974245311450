"""Small helpers for building parameterized SQL: values never enter statement text."""

from __future__ import annotations

from typing import Any

import asyncpg


class Params:
    """Collects query arguments and hands out their $n placeholders."""

    def __init__(self, *initial: Any) -> None:
        self.values: list[Any] = list(initial)

    def add(self, value: Any, cast: str = "") -> str:
        self.values.append(value)
        placeholder = f"${len(self.values)}"
        return f"{placeholder}::{cast}" if cast else placeholder


def like_prefix(prefix: str) -> str:
    """A LIKE pattern matching the strings that start with prefix (its wildcards and
    escape character taken literally)."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


async def unguarded(conn: asyncpg.Connection) -> None:
    """Lifts the pool's statement timeout for the rest of conn's current transaction,
    for maintenance that may rightly take long."""
    await conn.execute("SET LOCAL statement_timeout = 0")


async def fetch_planned(conn: asyncpg.Connection, statement: str, *args: Any) -> list[Any]:
    """conn.fetch(statement, *args), planned for these args, inside a transaction. From
    a prepared statement's sixth run on, PostgreSQL may plan it once for any values,
    guessing the rows each keeps from the number of distinct values: a join whose best
    plan depends on how many rows a value keeps is then planned for none in particular."""
    await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
    rows = await conn.fetch(statement, *args)
    await conn.execute("SET LOCAL plan_cache_mode TO DEFAULT")
    return rows


async def take_turns(conn: asyncpg.Connection, *key: str) -> None:
    """Holds the advisory lock named by key until conn's transaction ends: the
    transactions that take one key run from there one after another."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "/".join(key))


async def took_turn(conn: asyncpg.Connection, *key: str) -> bool:
    """Takes the turn named by key (as take_turns) if no other transaction holds it, or
    conn's holds it already; whether it did. It never waits."""
    return bool(
        await conn.fetchval(
            "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))", "/".join(key)
        )
    )
