"""Once the tables are analyzed, PostgreSQL expects about as many runs to meet a filter
on params and tags as do, so that it picks the joins that suit them. It used to take a
term's key, its value and the value's indexed prefix for independent and expect about
a hundredth of the runs, then sort the matches through nested loops meant for a few.
A value shorter than the prefix is now compared by its prefix alone
(filter_sql.prefixed_condition), and ANALYZE learns which values each key holds
(migration 0019); autovacuum analyzes the few rows of experiments (migration 0020); and
a sort is planned for its values each time it runs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import asyncpg
import pgserver
import pytest
import pytest_asyncio

from bench import search_scale
from cairn_server import catalog
from cairn_server.common.server import migrate
from cairn_server.tracking.model import ViewType
from cairn_server.tracking.store import run_filters, search
from cairn_server.tracking.store.runs import RUN_FROM
from tests.conftest import database_of_its_own, eventually

RUNS = 10_000
# Over the benchmark's runs: values of one key in four and three, a value that three
# keys hold ('42' of lr, batch and seed), and two terms together.
FILTERS = [
    "tags.team = 'vision'",
    "params.optimizer = 'adam'",
    "params.lr = '42'",
    "tags.team = 'vision' and params.optimizer = 'adam'",
]


@pytest_asyncio.fixture(scope="module")
async def analyzed(postgres_url: str) -> AsyncIterator[tuple[asyncpg.Pool, int]]:
    """A database of the benchmark's runs, analyzed; its pool and the experiment's id.
    The same runs every time (seeded), and ANALYZE reads every row of them (a sample of
    60,000 rows), so that its statistics are the same every time too."""
    async with database_of_its_own(postgres_url) as url:
        database = await asyncpg.create_pool(url, min_size=1, max_size=1)
        try:
            await migrate(database, catalog.select(["tracking"]))
            # One connection: the pool's, seeded, then loaded.
            await database.execute("SELECT setseed(0.5)")
            experiment = await search_scale.load(database, RUNS, "estimates")
            await database.execute(
                """SET default_statistics_target = 200;
                   ANALYZE tracking.experiments, tracking.runs, tracking.params,
                       tracking.tags, tracking.latest_metrics"""
            )
            yield database, experiment
        finally:
            await database.close()


@pytest.mark.parametrize("text", FILTERS)
async def test_the_planner_expects_about_the_runs_a_value_filter_keeps(
    analyzed: tuple[asyncpg.Pool, int], text: str
) -> None:
    database, experiment = analyzed
    query = run_filters.RunQuery("default", [experiment], text, [], ViewType.ALL, 100, "")
    scope = run_filters.run_scope(query)
    statement = f"SELECT r.run_id FROM {RUN_FROM} {scope.joins} WHERE {scope.where}"
    plan = await database.fetchval(f"EXPLAIN (FORMAT JSON) {statement}", *scope.params.values)
    expected = json.loads(plan)[0]["Plan"]["Plan Rows"]
    met = len(await database.fetch(statement, *scope.params.values))
    assert met / 2 <= expected <= met * 2, f"expected {expected} runs, {met} met {text!r}"


@pytest.mark.parametrize(
    ("order", "statement"),
    [
        (["params.optimizer"], search.SORTED_THROUGH),  # a column of the sort alone
        # A metric no run has: the walk of its values finds none, and the runs without
        # it are sorted by id.
        (["metrics.absent DESC"], "NULL::double precision AS v0"),
    ],
    ids=["sort", "runs-without-the-metric"],
)
async def test_a_sort_is_planned_for_its_filter_s_values_however_often_it_runs(
    analyzed: tuple[asyncpg.Pool, int], order: list[str], statement: str
) -> None:
    """From a prepared statement's sixth run on, PostgreSQL may plan it once for any
    values, with a guess of how many runs each keeps: the same sort, asked again, took
    twice as long from then on."""
    database, experiment = analyzed
    text = "metrics.acc > 0.9 and params.model = 'cnn'"
    query = search.RunQuery("default", [experiment], text, order, ViewType.ALL, 100, "")
    for _ in range(8):
        page = await search.search_runs(database, query)
        assert len(page.items) == 100
    plans = await database.fetchrow(
        """SELECT sum(generic_plans) AS generic, sum(custom_plans) AS custom
           FROM pg_prepared_statements WHERE strpos(statement, $1) > 0""",
        statement,
    )
    assert plans["generic"] == 0
    assert plans["custom"] >= 8  # every call's (the runs without the metric: two ranks)


async def test_experiments_are_analyzed_after_their_first_change(
    own_postgres: pgserver.PostgresServer,
) -> None:
    """Left to autovacuum's default of 50 changed rows, a deployment's few experiments
    went unanalyzed, and PostgreSQL misjudged every search's join of runs to them
    (migration 0020). Autovacuum here looks every second rather than every minute."""
    database = await asyncpg.create_pool(own_postgres.get_uri(), min_size=1, max_size=1)
    try:
        await database.execute("ALTER SYSTEM SET autovacuum_naptime = 1")
        await database.execute("SELECT pg_reload_conf()")
        await migrate(database, catalog.select(["tracking"]))
        await database.execute(
            """INSERT INTO tracking.experiments (project, name, artifact_location)
               VALUES ('default', 'first', '')"""
        )

        async def analyzed() -> bool:
            return bool(
                await database.fetchval(
                    """SELECT last_autoanalyze IS NOT NULL FROM pg_stat_user_tables
                       WHERE schemaname = 'tracking' AND relname = 'experiments'"""
                )
            )

        await eventually(analyzed, timeout=60, what="an autovacuum analysis of experiments")
    finally:
        await database.execute("ALTER SYSTEM RESET autovacuum_naptime")
        await database.execute("SELECT pg_reload_conf()")
        await database.close()
