"""The asyncpg pool, and the embedded PostgreSQL used when no database URL is set."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import asyncpg

from . import logs
from .config import Config

_log = logs.get("cairn.database")


def embedded_url(data_dir: str) -> str:
    """Starts (or reuses) a private PostgreSQL under `<data_dir>/postgres`; returns its URL.

    `pgserver` stops it when the last process using it exits; the data stays, so the
    next start takes about a second.
    """
    import pgserver  # Only the embedded mode needs it.

    pgdata = Path(data_dir).resolve() / "postgres"
    pgdata.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
        warnings.simplefilter("ignore")
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
    _log.info("embedded postgres ready", data_dir=str(pgdata))
    return str(server.get_uri())


def resolve_url(config: Config) -> str:
    return config.database_url or embedded_url(config.data_dir)


async def create_pool(url: str, config: Config) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        url,
        min_size=config.db_pool_min_size,
        max_size=config.db_pool_size,
        # Stores run their SQL through asyncpg's statement cache; keep it warm.
        statement_cache_size=1024,
        reset=_keep_session,
        init=_register_codecs,
    )


async def _register_codecs(conn: asyncpg.Connection) -> None:
    """jsonb in and out as Python values rather than JSON text."""
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skips asyncpg's reset round trip (RESET ALL, UNLISTEN, CLOSE ALL) on release.

    Safe because no store leaves session state behind: settings are SET LOCAL,
    cursors live inside transactions, and nothing LISTENs or holds advisory locks
    beyond a call (asyncpg still rolls back a transaction left open).
    """
