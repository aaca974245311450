"""Versioned SQL migrations, one PostgreSQL schema per service.

A service keeps files named `NNNN_description.sql` in its `migrations/` folder. Each
pending file runs in its own transaction, and the version is recorded in
`<schema>.schema_migrations` in that same transaction, so a failed file leaves no trace.
The whole run holds a PostgreSQL advisory lock, so replicas that start together
apply each file exactly once while the others wait.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from . import logs

# Any constant works, as long as every Cairn process uses the same one.
ADVISORY_LOCK_KEY = 0x43_41_49_52_4E  # "CAIRN"
_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_log = logs.get("cairn.migrations")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def discover(folder: Path) -> list[Migration]:
    """The migrations of a folder in version order; rejects gaps and odd names."""
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file name {path.name!r} is not NNNN_description.sql")
        found.append(Migration(int(match.group(1)), path.stem, path.read_text()))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"migrations in {folder} must be numbered 1, 2, 3 ...: {versions}")
    return found


async def apply(conn: asyncpg.Connection, schema: str, migrations: list[Migration]) -> list[int]:
    """Applies the pending migrations of one schema; returns the versions applied.

    Neither waiting for another replica's migrations nor a migration itself has the
    pool's statement timeout; RESET gives the connection its own back afterwards."""
    await conn.execute("SET statement_timeout = 0")
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        await _ensure_ledger(conn, schema)
        done = await applied_versions(conn, schema)
        applied = []
        for migration in migrations:
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(f'SET LOCAL search_path TO "{schema}"')
                await conn.execute(migration.sql)
                await conn.execute(
                    f'INSERT INTO "{schema}".schema_migrations (version, name) VALUES ($1, $2)',
                    migration.version,
                    migration.name,
                )
            _log.info("migration applied", schema=schema, migration=migration.name)
            applied.append(migration.version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
        await conn.execute("RESET statement_timeout")


async def applied_versions(conn: asyncpg.Connection, schema: str) -> set[int]:
    rows = await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations')
    return {row["version"] for row in rows}


async def _ensure_ledger(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    await conn.execute(
        f"""CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )"""
    )
