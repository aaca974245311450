"""The walks of the newest-first order (the default) and of one metric's order return
exactly what sorting every matching run returns: the same runs in the same order, pages
stitched together included, for every kind of filter term, over runs with NaN,
infinities, missing keys, deleted runs and tied start times, in one experiment and in
several."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import pytest
import pytest_asyncio

from cairn_server import catalog
from cairn_server.common.server import migrate
from cairn_server.tracking.model import ViewType
from cairn_server.tracking.store import run_filters, search, walks

from .rows_read import RecordingPool, rows_read

RUNS = 240
# A RARE_LIMIT under which every value counts as rare, however many runs the database
# holds (other modules' tests add theirs).
EVERY_VALUE_RARE = 10**9
METRIC_VALUES = [0.1, 0.5, 0.9, 0.95, 1.0, float("nan"), float("inf"), float("-inf"), None]
PARAM_VALUES = [("model", ["cnn", "rnn", "CNN-big", None]), ("optimizer", ["adam", "sgd", None])]
FILTERS = [
    "",
    "metrics.acc > 0.9",
    "metrics.acc <= 0.5",
    "metrics.acc != 0.5",
    "metrics.acc = 1.0",
    "metrics.acc IS NULL",
    "metrics.loss IS NOT NULL",
    "metrics.acc > 0.9 and params.model = 'cnn'",
    "params.model = 'cnn'",
    "params.model != 'cnn'",
    "params.model LIKE 'c%'",
    "params.model ILIKE 'C%'",
    "params.model NOT LIKE 'c%'",
    "params.model IN ('cnn', 'rnn')",
    "params.model NOT IN ('cnn')",
    "params.optimizer IS NULL",
    "tags.team = 'vision' and params.optimizer = 'adam'",
    "tags.team = 'vision' or metrics.acc > 0.9",
    "(tags.team = 'nlp' or tags.team = 'rl') and metrics.loss < 0.5",
    "tags.team = 'nobody'",
    "attributes.status = 'FINISHED'",
    "attributes.run_name LIKE 'r1%'",
    "attributes.start_time > 20",
    "inputs.name = 'train'",
    "inputs.uri IS NULL",
]


@pytest_asyncio.fixture(scope="module")
async def experiments(pool: asyncpg.Pool) -> AsyncIterator[list[int]]:
    """Two experiments of RUNS runs each, every key missing from some runs, start times
    shared by three runs each, a tenth of the runs deleted."""
    rng = random.Random(17)
    ids = []
    async with pool.acquire() as conn:
        for _ in range(2):
            experiment_id = await conn.fetchval(
                """INSERT INTO tracking.experiments (project, name, artifact_location)
                   VALUES ('default', $1, '') RETURNING experiment_id""",
                f"walks-{uuid.uuid4().hex[:10]}",
            )
            await _fill(conn, experiment_id, rng)
            ids.append(experiment_id)
    yield ids


async def _fill(conn: asyncpg.Connection, experiment_id: int, rng: random.Random) -> None:
    runs, metrics, params, tags, inputs = [], [], [], [], []
    for i in range(RUNS):
        run_id = uuid.uuid4()
        runs.append((run_id, "default", experiment_id, f"r{i}", rng.choice([1, 3, 4]), i // 3, ""))
        for key in ("acc", "loss"):
            if (value := rng.choice(METRIC_VALUES)) is not None:
                metrics.append((run_id, key, value, 0, 0))
        for key, values in PARAM_VALUES:
            if (text := rng.choice(values)) is not None:
                params.append((run_id, key, text))
        if (team := rng.choice(["vision", "nlp", "rl", None])) is not None:
            tags.append((run_id, "team", team))
        if rng.random() < 0.3:
            inputs.append((run_id, "dataset", rng.choice(["train", "eval"]), f"s3://d/{i}", "", ""))
    await conn.copy_records_to_table(
        "runs",
        schema_name="tracking",
        records=runs,
        columns=[
            "run_id",
            "project",
            "experiment_id",
            "run_name",
            "status",
            "start_time",
            "artifact_uri",
        ],
    )
    columns = ["run_id", "key", "value", "step", "timestamp_ms"]
    await conn.copy_records_to_table(
        "latest_metrics", schema_name="tracking", records=metrics, columns=columns
    )
    for table, rows in (("params", params), ("tags", tags)):
        await conn.copy_records_to_table(table, schema_name="tracking", records=rows)
    await conn.copy_records_to_table(
        "run_inputs",
        schema_name="tracking",
        records=inputs,
        columns=["run_id", "kind", "name", "uri", "digest", "context"],
    )
    deleted = [r[0] for r in runs if rng.random() < 0.1]
    await conn.execute(
        "UPDATE tracking.runs SET lifecycle_stage = 2 WHERE run_id = ANY($1::uuid[])", deleted
    )


async def _sorted(pool: asyncpg.Pool, query: search.RunQuery) -> list[uuid.UUID]:
    """Every matching run in newest-first order, by the statement that sorts them all
    (the one the search ran before it walked the index)."""
    orders = query.order_by or search.DEFAULT_ORDER
    terms = [search.parse_order(text) for text in orders]
    keyset = search.paging.Keyset(search._sort_key(terms))
    scope = run_filters.run_scope(query)
    statement = search._sorted_scan(terms, keyset, scope, None, 10 * RUNS)
    async with pool.acquire() as conn:
        rows = await conn.fetch(statement, *scope.params.values)
    (ident, ascending), *_ = terms
    if ident.entity == "metric":
        # Ordered by one metric, ties (and the runs without it) go by run id in the
        # metric's direction, the order of its index (docs/filters.md).
        rows = sorted(rows, key=lambda row: row["tiebreak"], reverse=not ascending)
        rows.sort(key=lambda row: 0.0 if row["v0"] is None else row["v0"], reverse=not ascending)
        rows.sort(key=lambda row: row["m0"])
    return [row["run_id"] for row in rows]


async def _paged(pool: asyncpg.Pool, query: search.RunQuery) -> list[uuid.UUID]:
    """Every page of the search, stitched together."""
    found: list[uuid.UUID] = []
    token = ""
    while True:
        page = await search.search_runs(pool, _with(query, page_token=token))
        found += [uuid.UUID(run.info.run_id) for run in page.items]
        if not (token := page.next_page_token):
            return found


def _with(query: search.RunQuery, **changes: object) -> search.RunQuery:
    fields = {**query.__dict__, **changes}
    return search.RunQuery(**fields)


@pytest.mark.parametrize(
    "order", [[], ["metrics.acc DESC"], ["metrics.loss ASC"], ["params.model DESC"]]
)
@pytest.mark.parametrize(
    ("walk_limit", "rare_limit"), [(walks.WALK_LIMIT, EVERY_VALUE_RARE), (60, 0)]
)
@pytest.mark.parametrize("view", [ViewType.ACTIVE_ONLY, ViewType.ALL, ViewType.DELETED_ONLY])
async def test_pages_of_every_filter_equal_the_sorted_statement(
    pool: asyncpg.Pool,
    experiments: list[int],
    view: ViewType,
    walk_limit: int,
    rare_limit: int,
    order: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Either every filter requiring a param or tag value is answered from that value's
    # holders, or none is: the walks answer them, and a small walk limit makes a walk
    # give up and sort on filters few runs meet (fewer than a page among 60 runs).
    monkeypatch.setattr(walks, "WALK_LIMIT", walk_limit)
    monkeypatch.setattr(search, "RARE_LIMIT", rare_limit)
    scopes = [experiments[:1], experiments, [experiments[1], experiments[0], experiments[1]]]

    # A few at once: the searches are PostgreSQL's work, which then takes every core;
    # more would wait for the pool's connections past its acquire timeout on a busy
    # machine.
    at_once = asyncio.Semaphore(4)

    async def check(experiment_ids: list[int], text: str) -> None:
        query = search.RunQuery("default", experiment_ids, text, order, view, 25, "")
        async with at_once:
            expected = await _sorted(pool, query)
            assert await _paged(pool, query) == expected, (experiment_ids, text)

    await asyncio.gather(*(check(ids, text) for ids in scopes for text in FILTERS))


@pytest.mark.parametrize("order", [[], ["params.model DESC"], ["metrics.acc DESC"]])
@pytest.mark.parametrize("view", [ViewType.ACTIVE_ONLY, ViewType.ALL, ViewType.DELETED_ONLY])
async def test_pages_the_planner_sorts_equal_the_sorted_statement(
    pool: asyncpg.Pool,
    experiments: list[int],
    view: ViewType,
    order: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sorts run by run are compared above (experiments of 240 runs); here the
    planner sorts, as for large experiments with statistics, and after the walks that
    give up."""
    monkeypatch.setattr(walks, "WALK_LIMIT", 60)
    monkeypatch.setattr(search, "RARE_LIMIT", 0)
    monkeypatch.setattr(search, "PER_RUN_SORT_LIMIT", -1)
    monkeypatch.setattr(search, "UNANALYZED_BYTES", 2**62)
    for text in FILTERS:
        query = search.RunQuery("default", experiments, text, order, view, 25, "")
        assert await _paged(pool, query) == await _sorted(pool, query), text


async def test_a_sort_of_a_small_experiment_tests_its_runs_one_by_one(
    pool: asyncpg.Pool, experiments: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ordered by a param, the pages are sorted from the experiment's own runs, each
    looked up by primary key, never from every experiment's holders of the filter's
    values (which PostgreSQL without statistics joined in a nested loop, over a minute
    with 100,000 runs in the database, for an experiment of 200)."""
    monkeypatch.setattr(search, "RARE_LIMIT", 0)
    sort_scope, candidates = search._sort_scope, []

    async def spied(*args: Any) -> Any:
        scope, selected = await sort_scope(*args)
        candidates.append(selected)
        return scope, selected

    monkeypatch.setattr(search, "_sort_scope", spied)
    query = search.RunQuery(
        "default",
        experiments[:1],
        "tags.team = 'vision' and params.optimizer = 'adam'",
        ["params.model DESC"],
        ViewType.ALL,
        10,
        "",
    )
    found = await _paged(pool, query)
    assert candidates
    assert all(c is not None and "tracking.runs c" in c for c in candidates)
    assert found == await _sorted(pool, query)


async def test_a_sort_goes_run_by_run_while_a_large_table_has_no_statistics(
    pool: asyncpg.Pool, experiments: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past PER_RUN_SORT_LIMIT runs the planner sorts, unless a table of
    STATISTICS_TABLES holds UNANALYZED_BYTES and has never been analyzed (here one made
    for the test, its autovacuum off); once analyzed, the planner sorts again."""
    monkeypatch.setattr(search, "PER_RUN_SORT_LIMIT", 100)
    query = search.RunQuery("default", experiments, "", ["params.model DESC"], ViewType.ALL, 10, "")
    probe = f"unanalyzed_{uuid.uuid4().hex[:10]}"
    async with pool.acquire() as conn:
        await conn.execute(
            f"""CREATE TABLE tracking.{probe} (run_id uuid)
                WITH (autovacuum_enabled = false)"""
        )
        try:
            await conn.execute("ANALYZE tracking.runs, tracking.params, tracking.tags")
            await conn.execute("ANALYZE tracking.latest_metrics")
            assert not await search._sorts_run_by_run(conn, query)
            monkeypatch.setattr(search, "STATISTICS_TABLES", (*search.STATISTICS_TABLES, probe))
            assert not await search._sorts_run_by_run(conn, query)  # empty
            await conn.execute(
                f"""INSERT INTO tracking.{probe}
                    SELECT gen_random_uuid() FROM generate_series(1, 5000)"""
            )
            assert await search._sorts_run_by_run(conn, query)
            await conn.execute(f"ANALYZE tracking.{probe}")
            assert not await search._sorts_run_by_run(conn, query)
            monkeypatch.setattr(search, "PER_RUN_SORT_LIMIT", 2 * RUNS)
            assert await search._sorts_run_by_run(conn, query)
        finally:
            await conn.execute(f"DROP TABLE tracking.{probe}")


async def test_a_sweep_in_one_experiment_hides_no_older_match_of_another(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Experiment A: 100 recent runs the filter rejects, then one older match; B: 30
    matches older than that. Walks that each stop after WALK_LIMIT runs, merged, would
    fill the first page with B's runs and page past A's match for good."""
    monkeypatch.setattr(walks, "WALK_LIMIT", 60)
    a, b = await _new_experiment(pool), await _new_experiment(pool)
    await _runs(pool, a, [(1000 - i, "sgd") for i in range(100)] + [(500, "adam")])
    await _runs(pool, b, [(400 - i, "adam") for i in range(30)])
    query = search.RunQuery(
        "default", [a, b], "params.optimizer = 'adam'", [], ViewType.ALL, 25, ""
    )
    found = await _paged(pool, query)
    assert found == await _sorted(pool, query)
    assert len(found) == 31


async def test_a_search_of_several_experiments_walks_their_newest_runs(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three experiments whose runs mostly meet the filter, and one without runs: every
    page is the merge of each experiment's walk, where the search sorted every run of
    them all (over 15 s a page of 100,000 runs right after a bulk load, make
    bench-search-scale)."""
    monkeypatch.setattr(walks, "WALK_LIMIT", 80)
    monkeypatch.setattr(search, "RARE_LIMIT", 0)
    ids = [await _new_experiment(pool) for _ in range(4)]
    for n, experiment in enumerate(ids[:3]):
        await _runs(pool, experiment, [(3 * i + n, "adam" if i % 4 else "sgd") for i in range(40)])
    outcomes = _walk_outcomes(monkeypatch, "walk_newest_first")
    query = search.RunQuery("default", ids, "params.optimizer = 'adam'", [], ViewType.ALL, 25, "")
    found = await _paged(pool, query)
    assert found == await _sorted(pool, query)
    assert len(found) == 90
    assert outcomes == [True] * 4


async def test_a_walk_stopped_short_behind_the_page_still_answers(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Experiment A: 100 runs the filter rejects, all older than B's 50 matches. A's
    walk stops short (WALK_LIMIT shared between the two), but behind the first page's
    last run, so the page is walked; the second page reaches A's unwalked runs, which
    the search then sorts."""
    monkeypatch.setattr(walks, "WALK_LIMIT", 60)
    monkeypatch.setattr(search, "RARE_LIMIT", 0)
    a, b = await _new_experiment(pool), await _new_experiment(pool)
    await _runs(pool, a, [(i, "sgd") for i in range(100)])
    await _runs(pool, b, [(1000 + i, "adam") for i in range(50)])
    outcomes = _walk_outcomes(monkeypatch, "walk_newest_first")
    query = search.RunQuery(
        "default", [a, b], "params.optimizer = 'adam'", [], ViewType.ALL, 25, ""
    )
    found = await _paged(pool, query)
    assert found == await _sorted(pool, query)
    assert len(found) == 50
    assert outcomes == [True, False]


async def test_a_walk_of_a_thousand_experiments_reads_each_ones_index_alone(
    fresh_url: str,
) -> None:
    """1,000 experiments named, one holding 3,000 runs, the others none, with
    statistics: whether each experiment's walk stopped short is counted from its own
    index entries. The count read the whole runs table once per experiment (3 million
    rows here) when PostgreSQL, expecting a few rows per experiment, chose to scan it."""
    database = await asyncpg.create_pool(fresh_url, min_size=1, max_size=1)
    try:
        await migrate(database, catalog.select(["tracking"]))
        ids = [
            row[0]
            for row in await database.fetch(
                """INSERT INTO tracking.experiments (project, name, artifact_location)
                   SELECT 'default', 'e' || i, '' FROM generate_series(1, 1000) AS i
                   RETURNING experiment_id"""
            )
        ]
        await _runs(database, ids[0], [(i, "adam") for i in range(3000)])
        await database.execute("ANALYZE tracking.runs, tracking.params")
        recording = RecordingPool(database)
        query = search.RunQuery("default", ids, "", [], ViewType.ALL, 100, "")
        page, _ = await search.search_page(cast(asyncpg.Pool, recording), query)
        assert len(page.infos) == 100
        assert await rows_read(database, recording.statements, "runs") < 10_000
    finally:
        await database.close()


async def test_the_walk_and_the_sort_each_answer_in_one_experiment(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filter most runs meet is answered by the walk; one no run meets gives up after
    WALK_LIMIT runs and is answered by sorting (no value counts as rare here)."""
    monkeypatch.setattr(walks, "WALK_LIMIT", 60)
    monkeypatch.setattr(search, "RARE_LIMIT", 0)
    experiment = await _new_experiment(pool)
    await _runs(pool, experiment, [(i, "adam") for i in range(100)])
    outcomes = _walk_outcomes(monkeypatch, "walk_newest_first")
    for text in ("params.optimizer = 'adam'", "params.optimizer = 'sgd'"):
        query = search.RunQuery("default", [experiment], text, [], ViewType.ALL, 25, "")
        assert await _paged(pool, query) == await _sorted(pool, query)
    # adam: four pages walked; sgd: the walk gave up and the sort answered (nothing)
    assert outcomes == [True, True, True, True, False]


async def test_a_value_few_runs_hold_is_answered_from_its_holders(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three old runs among a hundred newer ones hold optimizer = 'lbfgs': the page is
    made from those three, without walking the newer runs; 'adam', which a hundred
    hold, is not rare and is walked."""
    monkeypatch.setattr(search, "RARE_LIMIT", 50)
    experiment = await _new_experiment(pool)
    await _runs(pool, experiment, [(i, "lbfgs") for i in range(3)])
    await _runs(pool, experiment, [(100 + i, "adam") for i in range(100)])
    from_holders: list[str] = []
    sorted_scan = search._sorted_scan

    def spied(*args: Any) -> str:
        statement = sorted_scan(*args)
        if len(args) > 5 and args[5] is not None:  # the candidates
            from_holders.append(args[5])
        return statement

    monkeypatch.setattr(search, "_sorted_scan", spied)
    for text in (
        "params.optimizer = 'lbfgs'",
        "params.optimizer IN ('lbfgs', 'none') and attributes.start_time > 0",
        "params.optimizer = 'adam'",
    ):
        query = search.RunQuery("default", [experiment], text, [], ViewType.ALL, 25, "")
        assert await _paged(pool, query) == await _sorted(pool, query)
    # One page each for the two rare filters, made from the holders; none for adam.
    assert len(from_holders) == 2
    assert all("tracking.params h" in candidates for candidates in from_holders)
    assert len(await _paged(pool, _with(query, filter="params.optimizer = 'lbfgs'"))) == 3


async def test_a_metric_walk_through_other_experiments_values_gives_up_and_sorts(
    pool: asyncpg.Pool, experiments: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The metric's index holds every experiment's values: three runs with acc 0.5 lie
    behind a hundred of the other experiments' higher values, so ordered by acc the walk
    gives up after WALK_LIMIT entries and sorting answers, in the walk's order."""
    monkeypatch.setattr(walks, "WALK_LIMIT", 60)
    experiment = await _new_experiment(pool)
    await _runs(pool, experiment, [(i, "adam") for i in range(3)])
    await pool.execute(
        """INSERT INTO tracking.latest_metrics (run_id, key, value, step, timestamp_ms)
           SELECT run_id, 'acc', 0.5, 0, 0 FROM tracking.runs WHERE experiment_id = $1""",
        experiment,
    )
    outcomes = _walk_outcomes(monkeypatch, "walk_one_metric")
    query = search.RunQuery("default", [experiment], "", ["metrics.acc DESC"], ViewType.ALL, 2, "")
    found = await _paged(pool, query)
    assert found == await _sorted(pool, query)
    assert len(found) == 3
    assert outcomes == [False, False]


def _walk_outcomes(monkeypatch: pytest.MonkeyPatch, name: str) -> list[bool]:
    """Whether each call of the walk `name` answered (True) or gave up (False)."""
    outcomes: list[bool] = []
    walk = getattr(walks, name)

    async def spied(*args: Any) -> Any:
        rows = await walk(*args)
        outcomes.append(rows is not None)
        return rows

    monkeypatch.setattr(walks, name, spied)
    return outcomes


async def _new_experiment(pool: asyncpg.Pool) -> int:
    return await pool.fetchval(
        """INSERT INTO tracking.experiments (project, name, artifact_location)
           VALUES ('default', $1, '') RETURNING experiment_id""",
        f"walks-{uuid.uuid4().hex[:10]}",
    )


async def _runs(pool: asyncpg.Pool, experiment_id: int, runs: list[tuple[int, str]]) -> None:
    """Runs with these start times and optimizer params."""
    ids = [uuid.uuid4() for _ in runs]
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "runs",
            schema_name="tracking",
            records=[
                (run_id, "default", experiment_id, "r", 3, start, "")
                for run_id, (start, _) in zip(ids, runs, strict=True)
            ],
            columns=[
                "run_id",
                "project",
                "experiment_id",
                "run_name",
                "status",
                "start_time",
                "artifact_uri",
            ],
        )
        await conn.copy_records_to_table(
            "params",
            schema_name="tracking",
            records=[
                (run_id, "optimizer", value) for run_id, (_, value) in zip(ids, runs, strict=True)
            ],
        )


async def test_the_filters_compared_meet_some_runs_and_not_all(
    pool: asyncpg.Pool, experiments: list[int]
) -> None:
    """The comparison above is only worth something if the filters select."""
    everything = search.RunQuery("default", experiments, "", [], ViewType.ALL, 1000, "")
    total = len(await _sorted(pool, everything))
    assert total == 2 * RUNS
    for text in FILTERS[1:]:
        if text != "tags.team = 'nobody'":
            assert 0 < len(await _sorted(pool, _with(everything, filter=text))) < total, text
