"""A lookup of one run's inputs reads that run's inputs alone, by the primary key, beside
one run of many inputs among runs of none too. PostgreSQL plans a lookup of any run by
the rows a run of the table holds on average; with most runs holding no inputs, that
average was all of them, and a filter on inputs tested run by run, or a page's budget,
read the whole table (or a whole index of another column) once for each run (migration
0021 fixes the average)."""

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
INDEXES = {"run_inputs_pkey", "run_inputs_by_uri"}


@pytest_asyncio.fixture
async def beside_many(tracking: cairn.TrackingClient, pool: asyncpg.Pool, unique: str) -> str:
    """An experiment of five runs, one of them with an input, beside a run of MANY
    inputs, counted into its total and analyzed."""
    elsewhere = await tracking.create_experiment(f"many-{unique}")
    large = uuid.UUID((await tracking.create_run(elsewhere)).info.run_id)
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO tracking.run_inputs (run_id, kind, name, uri, digest, context)
               SELECT $1::uuid, 'dataset', 'd', 's3://b/' || g, '', ''
               FROM generate_series(1, $2) g""",
            large,
            MANY,
        )
        await conn.execute(
            "UPDATE tracking.run_sizes SET bytes = tracking.run_bytes(run_id) WHERE run_id = $1",
            large,
        )
        await conn.execute("ANALYZE tracking.run_inputs")
    experiment_id = await tracking.create_experiment(f"few-{unique}")
    for n in range(5):
        run_id = (await tracking.create_run(experiment_id, start_time=n + 1)).info.run_id
        if n == 0:
            await tracking.log_inputs(run_id, [RunInput(kind="dataset", name="d", uri="s3://b/x")])
    return experiment_id


def _ways_read(node: dict[str, Any]) -> set[tuple[str, str | None]]:
    """How a plan reads run_inputs: each scan's node type and index (None for none),
    the index scans under a bitmap scan too."""
    ways = {way for child in node.get("Plans", []) for way in _ways_read(child)}
    if node.get("Relation Name") == "run_inputs" or node.get("Index Name") in INDEXES:
        ways.add((node["Node Type"], node.get("Index Name")))
    return ways


def _assert_read_by_run(plans: list[dict[str, Any]]) -> None:
    """That the plans read run_inputs only by ranges of its primary key (a run's), and
    read the experiment's one input once at most."""
    ways = {way for plan in plans for way in _ways_read(plan)}
    assert ways, "run_inputs was not read"
    assert {index for _, index in ways} <= {"run_inputs_pkey", None}, ways
    assert ("Seq Scan", None) not in ways, ways
    assert sum(read_in(plan, "run_inputs") for plan in plans) <= 1


async def test_a_filter_on_inputs_tested_run_by_run_reads_each_runs_own(
    pool: asyncpg.Pool, beside_many: str
) -> None:
    explaining = ExplainingPool(pool)
    query = search.RunQuery(
        "default", [int(beside_many)], "datasets.name = 'd'", [], ViewType.ACTIVE_ONLY, 25, ""
    )

    page = await search.search_runs(cast(asyncpg.Pool, explaining), query)

    assert len(page.items) == 1
    _assert_read_by_run(explaining.plans)


async def test_a_pages_budget_counts_each_runs_own_inputs(
    tracking: cairn.TrackingClient, pool: asyncpg.Pool, beside_many: str
) -> None:
    runs = [uuid.UUID(run.info.run_id) for run in await tracking.search_runs(beside_many)]
    async with pool.acquire() as conn:
        explaining = ExplainingConnection(conn)
        rows = [{"run_id": run_id} for run_id in runs]

        assert await sizes.loadable(cast(asyncpg.Connection, explaining), rows, 1024) == 5

    _assert_read_by_run(explaining.plans)
