"""The ends of the settings' ranges work where the values are used: PostgreSQL takes
the database guards, request ids and LogBatch ids prune, the janitor sweeps, and a
garbage collection succeeds (past these ends each failed later, in PostgreSQL or
Python: audit 20)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
from structlog.testing import capture_logs

import cairn
from cairn.types import OperationState
from cairn_server.artifacts import backends
from cairn_server.artifacts.janitor import Janitor
from cairn_server.artifacts.store import ObjectStore
from cairn_server.common import database
from cairn_server.common.config import Bounds, Config
from cairn_server.common.idempotency import Idempotency
from cairn_server.tracking import retention
from tests.conftest import new_project, serving, with_overrides


def _bounds(setting: str) -> Bounds:
    field = next(f for f in dataclasses.fields(Config) if f.name == setting)
    bounds: Bounds = field.metadata["bounds"]
    return bounds


@contextlib.asynccontextmanager
async def _pool(config: Config, timeout: float, work_mem_kib: int) -> AsyncIterator[asyncpg.Pool]:
    changed = with_overrides(
        config,
        db_statement_timeout_seconds=timeout,
        db_work_mem_kib=work_mem_kib,
        db_pool_min_size=0,
        db_pool_size=1,
    )
    pool = await database.create_pool(config.database_url, changed)
    try:
        yield pool
    finally:
        await database.close_pool(pool)


@pytest.mark.parametrize("work_mem_end", ["least", "most"])
async def test_postgresql_takes_the_ends_of_the_database_guards(
    config: Config, work_mem_end: str
) -> None:
    longest = _bounds("db_statement_timeout_seconds").most
    work_mem = int(getattr(_bounds("db_work_mem_kib"), work_mem_end))
    async with _pool(config, longest, work_mem) as pool:
        rows = await pool.fetch(
            """SELECT name, setting FROM pg_settings
               WHERE name IN ('statement_timeout', 'work_mem') ORDER BY name"""
        )
    assert [row["setting"] for row in rows] == [str(int(longest * 1000)), str(work_mem)]


async def test_the_shortest_statement_timeout_is_a_timeout(config: Config) -> None:
    """1 ms: no positive timeout rounds to 0, which PostgreSQL takes for none at all."""
    shortest = _bounds("db_statement_timeout_seconds").least
    async with _pool(config, shortest, Config().db_work_mem_kib) as pool:
        with pytest.raises(asyncpg.QueryCanceledError):
            await pool.execute("SELECT pg_sleep(5)")


async def test_request_ids_prune_with_the_longest_retention(pool: asyncpg.Pool) -> None:
    longest = _bounds("request_id_retention_seconds").most
    assert longest == _bounds("batch_id_retention_seconds").most
    once = Idempotency(pool, {"cairn.tracking.v1.TrackingService": "tracking"}, exempt=set())
    assert await once.prune(longest) >= 0
    assert await retention.prune(pool, longest, longest) >= 0


async def test_the_janitor_sweeps_with_the_longest_min_age(
    config: Config, pool: asyncpg.Pool
) -> None:
    longest = timedelta(seconds=_bounds("artifact_janitor_min_age_seconds").most)
    janitor = Janitor(ObjectStore(pool), backends.from_config(config), longest)
    with capture_logs() as logged:
        await janitor.sweep()
    assert [e for e in logged if e["log_level"] in ("warning", "error")] == []


async def test_a_garbage_collection_succeeds_with_the_ends_of_the_ranges(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    ends = {
        "request_id_retention_seconds": _bounds("request_id_retention_seconds").most,
        "batch_id_retention_seconds": _bounds("batch_id_retention_seconds").most,
        "artifact_janitor_min_age_seconds": _bounds("artifact_janitor_min_age_seconds").most,
        "max_message_bytes": int(_bounds("max_message_bytes").most),
        "shutdown_grace_seconds": _bounds("shutdown_grace_seconds").most,
        "health_probe_interval_seconds": _bounds("health_probe_interval_seconds").least,
    }
    async with serving(config, pool, [], **ends) as port:
        project = await new_project(port, f"bounds-{unique}")
        async with cairn.Client(f"http://127.0.0.1:{port}", project=project) as client:
            started = await client.operations.start_garbage_collection(datetime.timedelta(hours=1))
            done = await client.operations.wait_operation(started.name, timeout=60)
    assert done.state is OperationState.SUCCEEDED, done.errors
