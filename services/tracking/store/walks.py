"""The walks of a run search: pages read in an index's order, the filter tested run
by run, stopping once the page is full, so that a page costs about its own size. A walk
that visits WALK_LIMIT entries (shared among the experiments of a newest-first walk)
without filling its page gives up (None), and the search sorts instead (see search.py).
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from ...common import sql
from ...common.filters import Identifier
from ...common.sql import Params
from .run_filters import MISSING, NAN, VALUED, RunQuery, run_scope
from .runs import EXPERIMENT_OF_RUN, RUN_COLUMNS, RUN_FROM

# How many runs (or metric values) a page walks, testing the filter on each, before sorting
# the matching runs instead: in all the experiments walked (see _walked_too_far).
WALK_LIMIT = 5_000
# Lets the planner sort again after a walk, as the database's settings (its role's, its
# configuration's) say: a walk runs inside the page's transaction, where its SET LOCAL
# would last to the page's end.
SORTING_AGAIN = "SET LOCAL enable_sort TO DEFAULT"


async def walk_one_metric(
    conn: asyncpg.Connection,
    query: RunQuery,
    term: tuple[Identifier, bool],
    last: list[Any] | None,
    wanted: int,
) -> list[asyncpg.Record] | None:
    """Ordered by one metric: walk the (key, value, run_id) index from the page's start
    and stop after `wanted` matches, so a page costs about its own size rather than the
    whole experiment. Once the valued runs run out, the runs whose value is NaN follow,
    then those without the metric, each by run id, as MLflow orders them. Ties go by run
    id in the value's direction, the index's order.

    The index holds the metric of every experiment: a filter few of its runs meet would
    make the walk visit most of them, so it gives up after WALK_LIMIT entries and
    returns None, and the caller sorts instead (search._sorted_by_one_metric). The walk and the
    runs without a value are read in the page's snapshot: conn is in search.search_page's
    REPEATABLE READ transaction, within which SET LOCAL holds."""
    rank = VALUED if last is None else last[0]
    rows: list[asyncpg.Record] = []
    if rank == VALUED:
        # As for the newest-first walk: without statistics PostgreSQL would rather
        # sort every value of the metric than walk its index (see walk_newest_first).
        # The runs without a value are sorted, so sorting is allowed again for them.
        await conn.execute("SET LOCAL enable_sort = off")
        rows += await _walk_metric_values(conn, query, term, last, wanted)
        await conn.execute(SORTING_AGAIN)
        if len(rows) < wanted and await _metric_walked_too_far(conn, term, last):
            return None
    for unvalued in (NAN, MISSING):
        if len(rows) < wanted and rank <= unvalued:
            after = last[2] if last is not None and rank == unvalued else None
            rows += await _runs_ranked(conn, query, term, unvalued, after, wanted - len(rows))
    return rows


async def _runs_ranked(
    conn: asyncpg.Connection,
    query: RunQuery,
    term: tuple[Identifier, bool],
    rank: int,
    after: uuid.UUID | None,
    wanted: int,
) -> list[asyncpg.Record]:
    """The matching runs whose metric is NaN (rank NAN) or absent (MISSING), by run id
    in the metric's direction, after the run id `after` if given."""
    ident, ascending = term
    direction, later = ("ASC", ">") if ascending else ("DESC", "<")
    scope = run_scope(query)
    params = scope.params
    key = params.add(ident.key)
    start = "TRUE" if after is None else f"r.run_id {later} {params.add(after, 'uuid')}"
    held = f"SELECT 1 FROM tracking.latest_metrics x WHERE x.run_id = r.run_id AND x.key = {key}"
    ranked = f"EXISTS ({held} AND x.value = 'NaN')" if rank == NAN else f"NOT EXISTS ({held})"
    # The filter's runs are joined, as the planner sees fit for its values.
    return await sql.fetch_planned(
        conn,
        f"""SELECT {RUN_COLUMNS}, {rank} AS m0, NULL::double precision AS v0,
                   r.run_id AS tiebreak
            FROM {RUN_FROM} {scope.joins}
            WHERE {scope.where} AND {start} AND {ranked}
            ORDER BY r.run_id {direction} LIMIT {params.add(wanted)}""",
        *params.values,
    )


async def _walk_metric_values(
    conn: asyncpg.Connection,
    query: RunQuery,
    term: tuple[Identifier, bool],
    last: list[Any] | None,
    wanted: int,
) -> list[asyncpg.Record]:
    """The matching runs with a value of the metric, from the page's start, among the
    next WALK_LIMIT entries of its index."""
    ident, ascending = term
    direction = "ASC" if ascending else "DESC"
    scope = run_scope(query, per_run=True)
    params = scope.params
    start = _metric_after(term, last, params)
    # The run and its filter are looked up per index entry, in order (OFFSET 0 keeps
    # PostgreSQL from flattening the lookup into a join over every run, which it
    # prefers while it has no statistics yet, as right after a bulk load).
    return await conn.fetch(
        f"""SELECT m.*, {VALUED} AS m0, o.value AS v0, o.run_id AS tiebreak
            FROM (
                SELECT o.run_id, o.value FROM tracking.latest_metrics o
                WHERE o.key = {params.add(ident.key)} AND o.value <> 'NaN' AND {start}
                ORDER BY o.value {direction}, o.run_id {direction}
                LIMIT {params.add(WALK_LIMIT)}
            ) o
            CROSS JOIN LATERAL (
                SELECT {RUN_COLUMNS} FROM {RUN_FROM} {scope.joins}
                WHERE r.run_id = o.run_id AND {scope.where} OFFSET 0
            ) m
            ORDER BY o.value {direction}, o.run_id {direction} LIMIT {params.add(wanted)}""",
        *params.values,
    )


def _metric_after(term: tuple[Identifier, bool], last: list[Any] | None, params: Params) -> str:
    """Index entries (as o) after the page's start in the metric's order."""
    if last is None:
        return "TRUE"
    after = ">" if term[1] else "<"
    cursor = f"({params.add(last[1], 'double precision')}, {params.add(last[2], 'uuid')})"
    return f"(o.value, o.run_id) {after} {cursor}"


async def _metric_walked_too_far(
    conn: asyncpg.Connection, term: tuple[Identifier, bool], last: list[Any] | None
) -> bool:
    """Whether the metric's index holds more than WALK_LIMIT values from the page's
    start (so the walk may have stopped short)."""
    params = Params(term[0].key)
    start = _metric_after(term, last, params)
    walked = params.add(WALK_LIMIT)
    return bool(
        await conn.fetchval(
            f"""SELECT count(*) > {walked} FROM (
                    SELECT 1 FROM tracking.latest_metrics o
                    WHERE o.key = $1 AND o.value <> 'NaN' AND {start}
                    LIMIT {walked} + 1
                ) c""",
            *params.values,
        )
    )


def newest_first(terms: list[tuple[Identifier, bool]]) -> bool:
    """The default order, which the runs_by_experiment index holds."""
    (ident, ascending), *others = terms
    return (
        not others and ident.entity == "attribute" and ident.key == "start_time" and not ascending
    )


async def walk_newest_first(
    conn: asyncpg.Connection, query: RunQuery, last: list[Any] | None, wanted: int
) -> list[asyncpg.Record] | None:
    """Newest first: walk each experiment's (experiment_id, start_time DESC, run_id)
    index from the page's start, the filter tested run by run, stop after `wanted`
    matches, and merge the experiments' walks: a page costs about its own size rather
    than sorting the experiments. A start time is never NULL: the "missing" flag is
    always 0.

    The walk reads each run's row as it goes: the filter is tested on that row, not on
    the run looked up again.

    A filter that few runs meet would make the walk visit most of the runs, one lookup
    per run: WALK_LIMIT runs are shared out among the experiments, and when an
    experiment's walk stopped short of runs that may belong in the page (see
    _walked_too_far), the walk gives up and returns None, and the caller sorts instead
    (hash joins over the filter's keys, chosen by the planner)."""
    scope = run_scope(query, per_run=True)
    params = scope.params
    start = _newer_after(last, params)
    limit, walked = params.add(wanted), params.add(_walk_limit(query))
    # Sorting is disabled for the statement: without statistics (right after a bulk
    # load) PostgreSQL expects the filter to keep a run or two and would rather sort
    # every run of the experiment than walk the index, a hundred times slower. OFFSET 0
    # keeps the filter a lookup per index entry (see walk_one_metric). The walk and the
    # count after it read the page's snapshot (search.search_page), so a run purged in
    # between cannot make a walk that stopped short look complete; SET LOCAL lasts to
    # that snapshot's end, so sorting is allowed again after the walk and its count.
    await conn.execute("SET LOCAL enable_sort = off")
    rows = await conn.fetch(
        f"""SELECT w.* FROM (SELECT DISTINCT unnest({scope.experiments})) AS x(experiment_id)
            CROSS JOIN LATERAL (
                SELECT m.*, 0 AS m0, o.start_time AS v0, o.run_id AS tiebreak
                FROM (
                    SELECT o.* FROM tracking.runs o
                    WHERE o.experiment_id = x.experiment_id AND {start}
                    ORDER BY o.start_time DESC, o.run_id LIMIT {walked}
                ) o
                CROSS JOIN LATERAL (
                    SELECT {RUN_COLUMNS} FROM (SELECT o.*) r {EXPERIMENT_OF_RUN} {scope.joins}
                    WHERE {scope.where} OFFSET 0
                ) m
                ORDER BY o.start_time DESC, o.run_id LIMIT {limit}
            ) w
            ORDER BY w.v0 DESC, w.tiebreak LIMIT {limit}""",
        *params.values,
    )
    # One experiment's walk that filled the page read every run up to the page's end.
    filled_alone = len(rows) == wanted and len(set(query.experiment_ids)) == 1
    end = rows[-1] if len(rows) == wanted else None
    complete = filled_alone or not await _walked_too_far(conn, query, last, end)
    await conn.execute(SORTING_AGAIN)
    return rows if complete else None


def _walk_limit(query: RunQuery) -> int:
    """How many runs each experiment's walk visits at most: WALK_LIMIT among them all."""
    return max(WALK_LIMIT // len(set(query.experiment_ids)), 1)


def _newer_after(last: list[Any] | None, params: Params) -> str:
    """Runs (as o) after the page's start in newest-first order."""
    if last is None:
        return "TRUE"
    time, run_id = params.add(last[1], "bigint"), params.add(last[2], "uuid")
    # The first bound lets the index scan start at the page's start instead of at the
    # newest run, so a deep page costs its own size.
    return f"(o.start_time <= {time} AND (o.start_time < {time} OR o.run_id > {run_id}))"


def _not_after(end: asyncpg.Record | None, params: Params) -> str:
    """Runs (as o) up to the page's last run, end, in newest-first order (all: None)."""
    if end is None:
        return "TRUE"
    time, run_id = params.add(end["v0"], "bigint"), params.add(end["tiebreak"], "uuid")
    return f"(o.start_time >= {time} AND (o.start_time > {time} OR o.run_id <= {run_id}))"


async def _walked_too_far(
    conn: asyncpg.Connection,
    query: RunQuery,
    last: list[Any] | None,
    end: asyncpg.Record | None,
) -> bool:
    """Whether an experiment holds more runs than its walk visits (_walk_limit) from
    the page's start to its last run, end (to the experiment's last run when the page
    is not full, end None): its walk stopped short, and a run it left unread may belong
    in the page. Otherwise every run up to the page's end was walked, in every
    experiment, so the merged walks hold the page's runs.

    Each count reads its experiment's index entries in the walk's order, sorting being
    off: PostgreSQL, expecting an experiment to hold a few runs, would rather scan the
    whole table for each experiment named, and one without runs reads all of it."""
    params = Params(list(query.experiment_ids))
    within = f"{_newer_after(last, params)} AND {_not_after(end, params)}"
    walked = params.add(_walk_limit(query))
    return bool(
        await conn.fetchval(
            f"""SELECT coalesce(bool_or(c.runs > {walked}), false)
                FROM (SELECT DISTINCT unnest($1::bigint[])) AS x(experiment_id)
                CROSS JOIN LATERAL (
                    SELECT count(*) AS runs FROM (
                        SELECT 1 FROM tracking.runs o
                        WHERE o.experiment_id = x.experiment_id AND {within}
                        ORDER BY o.start_time DESC, o.run_id LIMIT {walked} + 1
                    ) o
                ) c""",
            *params.values,
        )
    )
