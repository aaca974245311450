"""`make bench-search-scale`: searching 10,000 and 100,000 runs, in one experiment and
in two searched together.

Each size and layout gets a fresh PostgreSQL, bulk-loaded in SQL: runs with five
params, tags and metrics each (model one of 4 values, optimizer one of 3, team one of
4, acc uniform in [0, 1)), each run's values written together, as one LogBatch writes
them. Autovacuum is off for the loaded tables, so the first measurements see what a
search sees right after a bulk load: no statistics. Then ANALYZE, and the same again.

Measured through the tracking store (statement and loading of the page's runs, as
SearchRuns runs them, without gRPC): the first page (100 runs) of three filters people
write and of an order no index holds (a param's), p50 of several calls, and a scan of
every run, 1,000 a page. The baseline, on the same database in the same run: the
statements the search ran before it walked the newest-first index, sorted run by run
and loaded a page's runs by primary key (kept here as text). A baseline call is cut
off at BASELINE_TIMEOUT. The scan is also measured end to end: through `cairn serve
tracking` and the async Python client, pages decoded into Runs. Two experiments of
half the runs each are then searched at once the same way (the store's first pages
and scan only): their baseline is the sort, which searches of several experiments ran
before they walked each experiment's newest runs.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

import cairn
from cairn_server import catalog
from cairn_server.common import logs, paging
from cairn_server.common.server import migrate
from cairn_server.tracking.model import MetricPoint, Run, ViewType
from cairn_server.tracking.store import run_filters, search
from cairn_server.tracking.store.pages import run_info

from .harness import median, postgres, serve

# Other sizes as arguments: python -m bench.search_scale 1000000
SIZES = (10_000, 100_000)
SHAPES = [
    (
        "acc > 0.9 and model = 'cnn', by acc DESC",
        "metrics.acc > 0.9 and params.model = 'cnn'",
        ["metrics.acc DESC"],
    ),
    ("unfiltered, newest first", "", []),
    (
        "team = 'vision' and optimizer = 'adam', newest first",
        "tags.team = 'vision' and params.optimizer = 'adam'",
        ["attributes.start_time DESC"],
    ),
    (
        "team = 'vision' and optimizer = 'adam', by model (sorted)",
        "tags.team = 'vision' and params.optimizer = 'adam'",
        ["params.model DESC"],
    ),
]
# A size is loaded as one experiment, then (in a database of its own) as two of half
# the runs each, searched together.
EXPERIMENTS = (1, 2)
CALLS = 9
BUDGET_SECONDS = 10.0  # per measurement: fewer calls when one is slow
# A scan stops after this long and reports its rate so far, and how far it got: the
# previous statements sort the experiment for every page, hours at a million runs.
SCAN_BUDGET_SECONDS = 60.0
BASELINE_TIMEOUT = "15s"
# Autovacuum is off for these while the first measurements run, then they are analyzed.
_TABLES = ("experiments", "runs", "latest_metrics", "params", "tags", "run_sizes")
_PICK = "(array[{}])[1 + floor(random() * {})::int]"
_SEED = [
    (
        "latest_metrics (run_id, key, value, step, timestamp_ms)",
        "(array['acc', 'loss', 'f1', 'auc', 'mse'])[k + 1]",
        "random(), 0, 0",
    ),
    (
        "params (run_id, key, value)",
        "(array['model', 'optimizer', 'lr', 'batch', 'seed'])[k + 1]",
        f"""CASE k WHEN 0 THEN {_PICK.format("'cnn', 'rnn', 'mlp', 'vit'", 4)}
                   WHEN 1 THEN {_PICK.format("'adam', 'sgd', 'rmsprop'", 3)}
                   ELSE floor(random() * 100)::text END""",
    ),
    (
        "tags (run_id, key, value)",
        "(array['team', 'owner', 'stage', 'env', 'note'])[k + 1]",
        f"""CASE k WHEN 0 THEN {_PICK.format("'vision', 'nlp', 'speech', 'rl'", 4)}
                   ELSE 'x' || floor(random() * 10)::text END""",
    ),
]


async def load(pool: asyncpg.Pool, runs: int, name: str) -> int:
    """An experiment of `runs` runs, one second apart; its id."""
    async with pool.acquire() as conn:
        for table in _TABLES:
            await conn.execute(f"ALTER TABLE tracking.{table} SET (autovacuum_enabled = false)")
        experiment_id: int = await conn.fetchval(
            """INSERT INTO tracking.experiments (project, name, artifact_location)
               VALUES ('default', $1, '') RETURNING experiment_id""",
            name,
        )
        await conn.execute(
            """INSERT INTO tracking.runs
                   (run_id, project, experiment_id, run_name, status, start_time, artifact_uri)
               SELECT gen_random_uuid(), 'default', $1, 'r' || i, 3,
                      1700000000000 + i * 1000, ''
               FROM generate_series(1, $2) AS i""",
            experiment_id,
            runs,
        )
        for table, key, value in _SEED:
            await conn.execute(
                f"""INSERT INTO tracking.{table}
                    SELECT r.run_id, {key}, {value}
                    FROM tracking.runs r, generate_series(0, 4) AS k
                    WHERE r.experiment_id = $1
                    ORDER BY r.start_time, k""",
                experiment_id,
            )
        # Every run's total, as writes through the service keep it.
        await conn.execute("UPDATE tracking.run_sizes SET bytes = tracking.run_bytes(run_id)")
    return experiment_id


# The statements a page's runs were loaded with before: a join PostgreSQL hashes over
# the whole table while it has no statistics.
_PREVIOUS_LOADS = {
    "metrics": """SELECT run_id, key, value, timestamp_ms, step FROM tracking.latest_metrics
                  JOIN unnest($1::uuid[]) AS page(run_id) USING (run_id) ORDER BY key""",
    "params": """SELECT run_id, key, value FROM tracking.params
                 JOIN unnest($1::uuid[]) AS page(run_id) USING (run_id) ORDER BY key""",
    "tags": """SELECT run_id, key, value FROM tracking.tags
               JOIN unnest($1::uuid[]) AS page(run_id) USING (run_id) ORDER BY key""",
    "inputs": """SELECT run_id FROM tracking.run_inputs
                 JOIN unnest($1::uuid[]) AS page(run_id) USING (run_id)""",
}


async def previous_search(pool: asyncpg.Pool, query: search.RunQuery) -> paging.Page[Run]:
    """search.search_runs as it was: the metric walk (first pages only), else every
    match sorted."""
    terms = [search.parse_order(t) for t in (query.order_by or search.DEFAULT_ORDER)]
    keyset = paging.Keyset(
        search._sort_key(terms),
        "runs",
        query.project,
        sorted(query.experiment_ids),
        query.filter,
        list(query.order_by),
        int(query.view_type),
    )
    last = keyset.last(query.page_token)
    wanted = query.page_size + 1
    async with pool.acquire() as conn:
        if len(terms) == 1 and terms[0][0].entity == "metric" and last is None:
            rows = await _previous_metric_walk(conn, query, terms[0], wanted)
        else:
            scope = run_filters.run_scope(query)
            statement = search._sorted_scan(terms, keyset, scope, last, wanted)
            rows = await conn.fetch(statement, *scope.params.values)
        runs = await _previous_load(conn, rows[: query.page_size])
    return paging.Page(runs, keyset.next_token(rows, query.page_size))


async def _previous_metric_walk(
    conn: asyncpg.Connection, query: search.RunQuery, term: Any, wanted: int
) -> list[Any]:
    """The first page by one metric as it was walked: the run and its filter looked up
    with the indexes the planner picks (the page is full here: the shape's filter keeps
    about 250 runs of 10,000)."""
    scope = run_filters.run_scope(query)
    params = scope.params
    ident, ascending = term
    direction = "ASC" if ascending else "DESC"
    return await conn.fetch(
        f"""SELECT m.*, 0 AS m0, o.value AS v0, o.run_id AS tiebreak
            FROM tracking.latest_metrics o
            CROSS JOIN LATERAL (
                SELECT {search.RUN_COLUMNS} FROM {search.RUN_FROM} {scope.joins}
                WHERE r.run_id = o.run_id AND {scope.where} OFFSET 0
            ) m
            WHERE o.key = {params.add(ident.key)} AND o.value <> 'NaN'
            ORDER BY o.value {direction}, o.run_id {direction} LIMIT {params.add(wanted)}""",
        *params.values,
    )


async def _previous_load(conn: asyncpg.Connection, rows: list[Any]) -> list[Run]:
    runs = {row["run_id"]: Run(info=run_info(row)) for row in rows}
    ids = list(runs)
    for row in await conn.fetch(_PREVIOUS_LOADS["metrics"], ids):
        point = MetricPoint(row["key"], row["value"], row["timestamp_ms"], row["step"])
        runs[row["run_id"]].metrics.append(point)
    for table in ("params", "tags"):
        for row in await conn.fetch(_PREVIOUS_LOADS[table], ids):
            getattr(runs[row["run_id"]], table)[row["key"]] = row["value"]
    await conn.fetch(_PREVIOUS_LOADS["inputs"], ids)
    return list(runs.values())


Searcher = Callable[[asyncpg.Pool, search.RunQuery], Awaitable[paging.Page[Run]]]


async def first_page_p50(pool: asyncpg.Pool, searcher: Searcher, query: search.RunQuery) -> str:
    samples: list[float] = []
    spent = 0.0
    while len(samples) < CALLS and spent < BUDGET_SECONDS:
        started = time.perf_counter()
        try:
            await searcher(pool, query)
        except asyncpg.QueryCanceledError:
            return f"> {BASELINE_TIMEOUT}"
        samples.append(time.perf_counter() - started)
        spent += samples[-1]
    return f"{median(samples) * 1000:.1f} ms"


async def scan_rate(pool: asyncpg.Pool, searcher: Searcher, query: search.RunQuery) -> str:
    """Runs per second over the pages of 1,000."""

    async def page(token: str) -> tuple[int, str]:
        found = await searcher(pool, _with(query, page_token=token, page_size=1000))
        return len(found.items), found.next_page_token

    try:
        return await _rate(page, "")
    except asyncpg.QueryCanceledError:
        return f"page > {BASELINE_TIMEOUT}"


def _with(query: search.RunQuery, **changes: Any) -> search.RunQuery:
    return search.RunQuery(**{**query.__dict__, **changes})


async def api_scan_rate(client: cairn.TrackingClient, experiment_id: int) -> str:
    """Runs per second over the pages of 1,000 through the service and the client."""

    async def page(token: str | None) -> tuple[int, str | None]:
        found = await client.search_runs(str(experiment_id), max_results=1000, page_token=token)
        return len(found), found.next_page_token

    return await _rate(page, None)


async def api_table_rate(client: cairn.TrackingClient, experiment_id: int, runs: int) -> str:
    """Runs per second into one table of numpy columns, every run of the experiment."""
    started = time.perf_counter()
    table = await client.search_runs_table(str(experiment_id), max_results=runs)
    return f"{len(table['run_id']) / (time.perf_counter() - started):,.0f} runs/s"


async def _rate(page: Callable[[Any], Awaitable[tuple[int, Any]]], token: Any) -> str:
    """Reads pages from the first until the last or SCAN_BUDGET_SECONDS."""
    started, seen = time.perf_counter(), 0
    while True:
        count, token = await page(token)
        seen += count
        elapsed = time.perf_counter() - started
        if not token or elapsed > SCAN_BUDGET_SECONDS:
            cut = f" (the first {seen:,} runs)" if token else ""
            return f"{seen / elapsed:,.0f} runs/s{cut}"


async def measure(
    pools: dict[str, asyncpg.Pool],
    client: cairn.TrackingClient,
    experiment_ids: list[int],
    runs: int,
    stats: str,
) -> None:
    """The rows of one database: with several experiments, their first pages and the
    scan, searched all at once."""
    across = f" across {len(experiment_ids)} experiments" if len(experiment_ids) > 1 else ""
    for name, text, order in SHAPES:
        query = search.RunQuery(
            "default", experiment_ids, text, order, ViewType.ACTIVE_ONLY, 100, ""
        )
        before = await first_page_p50(pools["baseline"], previous_search, query)
        now = await first_page_p50(pools["now"], search.search_runs, query)
        _row(runs, stats, f"first page{across}: {name}", before, now)
    query = search.RunQuery("default", experiment_ids, "", [], ViewType.ACTIVE_ONLY, 1000, "")
    before = await scan_rate(pools["baseline"], previous_search, query)
    now = await scan_rate(pools["now"], search.search_runs, query)
    _row(runs, stats, f"scan every run{across}, 1,000 a page", before, now)
    if across:
        return
    (experiment_id,) = experiment_ids
    now = await api_scan_rate(client, experiment_id)
    _row(runs, stats, "the same scan through gRPC and the Python client", "", now)
    now = await api_table_rate(client, experiment_id, runs)
    _row(runs, stats, "the same runs as one table (search_runs_table)", "", now)


def _row(runs: int, stats: str, name: str, before: str, now: str) -> None:
    print(f"| {runs:,} | {stats} | {name} | {before} | {now} |", flush=True)


async def one_size(runs: int, experiments: int) -> None:
    """A fresh database of `runs` runs, shared evenly by the experiments."""
    with postgres() as database_url:
        pools = {
            "now": await asyncpg.create_pool(database_url, min_size=1, max_size=1),
            "baseline": await asyncpg.create_pool(
                database_url,
                min_size=1,
                max_size=1,
                server_settings={"statement_timeout": BASELINE_TIMEOUT},
            ),
        }
        try:
            await migrate(pools["now"], catalog.select(["tracking"]))
            experiment_ids = [
                await load(pools["now"], runs // experiments, f"scale-{n}")
                for n in range(experiments)
            ]
            with serve(database_url, "tracking") as server:
                async with cairn.TrackingClient.insecure_connection(
                    "127.0.0.1", server.port, timeout=600
                ) as client:
                    await measure(pools, client, experiment_ids, runs, "none (bulk load)")
                    tables = ", ".join(f"tracking.{t}" for t in _TABLES)
                    await pools["now"].execute(f"ANALYZE {tables}")
                    await measure(pools, client, experiment_ids, runs, "analyzed")
        finally:
            for pool in pools.values():
                await pool.close()


async def main() -> None:
    logs.configure("warning", "console")  # the migrations' lines would fall into the table
    print("search one experiment, then two of half the runs each, through the tracking store")
    print("(p50 of the first page of 100; a scan of every run, 1,000 a page); previous")
    print(f"statements cut off at {BASELINE_TIMEOUT}")
    print()
    print("| runs | statistics | search | previous SQL | now |")
    print("|---|---|---|---|---|")
    for runs in [int(arg) for arg in sys.argv[1:]] or SIZES:
        for experiments in EXPERIMENTS:
            await one_size(runs, experiments)


if __name__ == "__main__":
    asyncio.run(main())
