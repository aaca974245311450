"""Once the tables are analyzed, PostgreSQL expects about as many runs to meet a filter
on params and tags as do, so that it picks the joins that suit them. It used to take a
term's key, its value and the value's indexed prefix for independent and expect a
fraction of the runs (one in 30 over 100,000), then sort the matches through nested
loops meant for a few. A value shorter than the prefix is now compared by its prefix
alone (filter_sql.prefixed_condition), and ANALYZE learns which values each key holds
(migration 0019)."""

from __future__ import annotations

import json

import asyncpg
import pytest

from bench import search_scale
from cairn_server import catalog
from cairn_server.common.server import migrate
from cairn_server.tracking.model import ViewType
from cairn_server.tracking.store import run_filters
from cairn_server.tracking.store.runs import RUN_FROM

RUNS = 10_000
# Over the benchmark's runs: values of one key in four and three, a value that three
# keys hold ('42' of lr, batch and seed), and two terms together.
FILTERS = [
    "tags.team = 'vision'",
    "params.optimizer = 'adam'",
    "params.lr = '42'",
    "tags.team = 'vision' and params.optimizer = 'adam'",
]


@pytest.mark.parametrize("text", FILTERS)
async def test_the_planner_expects_about_the_runs_a_value_filter_keeps(
    fresh_url: str, text: str
) -> None:
    database = await asyncpg.create_pool(fresh_url, min_size=1, max_size=1)
    try:
        await migrate(database, catalog.select(["tracking"]))
        experiment = await search_scale.load(database, RUNS, "estimates")
        await database.execute("ANALYZE tracking.runs, tracking.params, tracking.tags")
        query = run_filters.RunQuery("default", [experiment], text, [], ViewType.ALL, 100, "")
        scope = run_filters.run_scope(query)
        statement = f"SELECT r.run_id FROM {RUN_FROM} {scope.joins} WHERE {scope.where}"
        plan = await database.fetchval(f"EXPLAIN (FORMAT JSON) {statement}", *scope.params.values)
        expected = json.loads(plan)[0]["Plan"]["Plan Rows"]
        met = len(await database.fetch(statement, *scope.params.values))
        assert met / 2 <= expected <= met * 2, f"expected {expected} runs, {met} met {text!r}"
    finally:
        await database.close()
