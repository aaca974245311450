"""A lookup of one run's entries reads that run's entries alone, by the primary key,
beside one run of many inputs or tags among runs of none too. PostgreSQL plans a lookup
of a run taken from a row by the rows a run of the table holds on average; with most
runs holding none, that average was all of them, and a filter on inputs tested run by
run, or a page's budget, read the whole table (or a whole index of another column) once
for each run. Migration 0021 fixes the average of inputs; a page's budget counts the
entries of runs given as values, which PostgreSQL looks up in its statistics."""

from __future__ import annotations

import uuid
from typing import Any, cast

import asyncpg
import pytest_asyncio

import cairn
from cairn.types import RunInput
from cairn_server.tracking.model import ViewType
from cairn_server.tracking.store import search, sizes

from .rows_read import ExplainingConnection, ExplainingPool, read_in

MANY = 20_000


@pytest_asyncio.fixture
async def beside_many(tracking: cairn.TrackingClient, pool: asyncpg.Pool, unique: str) -> str:
    """An experiment of five runs, one of them with an input, beside a run of MANY
    inputs and one of MANY tags, counted into their totals and analyzed."""
    elsewhere = await tracking.create_experiment(f"many-{unique}")
    large = [uuid.UUID((await tracking.create_run(elsewhere)).info.run_id) for _ in range(2)]
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO tracking.run_inputs (run_id, kind, name, uri, digest, context)
               SELECT $1::uuid, 'dataset', 'd', 's3://b/' || g, '', ''
               FROM generate_series(1, $2) g""",
            large[0],
            MANY,
        )
        await conn.execute(
            """INSERT INTO tracking.tags (run_id, key, value)
               SELECT $1::uuid, 'k' || g, 'v' FROM generate_series(1, $2) g""",
            large[1],
            MANY,
        )
        await conn.execute(
            """UPDATE tracking.run_sizes SET bytes = tracking.run_bytes(run_id)
               WHERE run_id = ANY($1)""",
            large,
        )
        await conn.execute("ANALYZE tracking.run_inputs; ANALYZE tracking.tags")
    experiment_id = await tracking.create_experiment(f"few-{unique}")
    for n in range(5):
        run_id = (await tracking.create_run(experiment_id, start_time=n + 1)).info.run_id
        if n == 0:
            await tracking.log_inputs(run_id, [RunInput(kind="dataset", name="d", uri="s3://b/x")])
    return experiment_id


def _ways_read(node: dict[str, Any], table: str) -> set[tuple[str, str | None]]:
    """How a plan reads table: each scan's node type and index (None for none), the
    index scans under a bitmap scan too."""
    ways = {way for child in node.get("Plans", []) for way in _ways_read(child, table)}
    index = node.get("Index Name")
    if node.get("Relation Name") == table or (index or "").startswith(f"{table}_"):
        ways.add((node["Node Type"], index))
    return ways


def _assert_read_by_run(plans: list[dict[str, Any]], table: str, most: int) -> None:
    """That the plans read table (of MANY rows of another run) by no index but its
    primary key, whose ranges are runs, and read most of its rows at most: a scan of
    the whole table reads MANY."""
    ways = {way for plan in plans for way in _ways_read(plan, table)}
    assert ways, f"{table} was not read"
    assert {index for _, index in ways} <= {f"{table}_pkey", None}, ways
    assert sum(read_in(plan, table) for plan in plans) <= most, (table, ways)


async def test_a_filter_on_inputs_tested_run_by_run_reads_each_runs_own(
    pool: asyncpg.Pool, beside_many: str
) -> None:
    explaining = ExplainingPool(pool)
    query = search.RunQuery(
        "default", [int(beside_many)], "datasets.name = 'd'", [], ViewType.ACTIVE_ONLY, 25, ""
    )

    page = await search.search_runs(cast(asyncpg.Pool, explaining), query)

    assert len(page.items) == 1
    _assert_read_by_run(explaining.plans, "run_inputs", 1)


async def test_a_pages_budget_counts_each_runs_own_entries(
    tracking: cairn.TrackingClient, pool: asyncpg.Pool, beside_many: str
) -> None:
    runs = [uuid.UUID(run.info.run_id) for run in await tracking.search_runs(beside_many)]
    async with pool.acquire() as conn, conn.transaction():
        explaining = ExplainingConnection(conn)
        rows = [{"run_id": run_id} for run_id in runs]

        assert await sizes.loadable(cast(asyncpg.Connection, explaining), rows, 1024) == 5

    for table in ["run_inputs", "tags"]:
        _assert_read_by_run(explaining.plans, table, 1)
