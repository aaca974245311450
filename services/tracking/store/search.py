"""Search runs: the filter language compiled to parameterized SQL, keyset paging.

Ordering puts NaN and missing values last in both directions: every order term sorts
first on a "missing" flag, then on the value. The run id breaks ties, which makes the
sort key unique and the keyset page token exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from ...common import filter_sql, filters, paging
from ...common.filters import FilterError, Identifier
from ...common.sql import Params
from ..model import Run, RunStatus, ViewType
from .pages import RunPage, load_page
from .runs import EXPERIMENT_OF_RUN, RUN_COLUMNS, RUN_FROM

ENTITIES = {
    "metrics": "metric",
    "metric": "metric",
    "params": "param",
    "param": "param",
    "parameters": "param",
    "parameter": "param",
    "tags": "tag",
    "tag": "tag",
    "attributes": "attribute",
    "attribute": "attribute",
    "attr": "attribute",
    "run": "attribute",
    "inputs": "input",
    "input": "input",
}
# The fields of a run's inputs a filter compares (tracking.run_inputs columns).
INPUT_FIELDS = ("kind", "name", "uri", "digest", "context")
# Attribute name -> (SQL expression, SQL type).
ATTRIBUTES = {
    "run_id": ("replace(r.run_id::text, '-', '')", "text"),
    "run_name": ("r.run_name", "text"),
    "status": ("r.status", "smallint"),
    "user_id": ("r.user_id", "text"),
    "start_time": ("r.start_time", "bigint"),
    "end_time": ("r.end_time", "bigint"),
    "artifact_uri": ("r.artifact_uri", "text"),
    "experiment_id": ("r.experiment_id", "bigint"),
}
_TABLES = {
    "metric": "tracking.latest_metrics",
    "param": "tracking.params",
    "tag": "tracking.tags",
}
_TYPES = {"metric": "double precision", "param": "text", "tag": "text"}
DEFAULT_ORDER = ["attributes.start_time DESC"]
# How many runs a newest-first page walks, testing the filter on each, before sorting
# the matching runs instead (see _walk_newest_first).
WALK_LIMIT = 5_000
# A filter requiring a param or tag value fewer runs than this hold (in any experiment)
# is answered from those runs alone (see _rarest_value).
RARE_LIMIT = 1_000


@dataclass(frozen=True)
class RunQuery:
    project: str
    experiment_ids: Sequence[int]
    filter: str
    order_by: Sequence[str]
    view_type: ViewType
    page_size: int
    page_token: str


async def search_runs(pool: asyncpg.Pool, query: RunQuery) -> paging.Page[Run]:
    page, next_page_token = await search_page(pool, query)
    return paging.Page(page.runs(), next_page_token)


async def search_page(pool: asyncpg.Pool, query: RunQuery) -> tuple[RunPage, str]:
    """The page of runs the query asks for, by column, and the next page's token."""
    terms = [filters.parse_order_by(text, ENTITIES) for text in (query.order_by or DEFAULT_ORDER)]
    keyset = paging.Keyset(
        _sort_key(terms),
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
        rows = await _page_rows(conn, query, terms, keyset, last, wanted)
        page = await load_page(conn, rows[: query.page_size])
    return page, keyset.next_token(rows, query.page_size)


async def _page_rows(
    conn: asyncpg.Connection,
    query: RunQuery,
    terms: list[tuple[Identifier, bool]],
    keyset: paging.Keyset,
    last: list[Any] | None,
    wanted: int,
) -> list[asyncpg.Record]:
    """The page's rows (one more than the page, to know whether more follow)."""
    rare = await _rarest_value(conn, query)
    if len(terms) == 1 and terms[0][0].entity == "metric":
        if rare is None:
            walked = await _walk_one_metric(conn, query, terms[0], last, wanted)
            if walked is not None:
                return walked
        return await _sorted_by_one_metric(conn, query, terms[0], last, wanted, rare)
    if rare is not None:
        scope = _scope(query, per_run=True)
        candidates = _holders(rare, scope.params)
        statement = _sorted_scan(terms, keyset, scope, last, wanted, candidates)
        return await conn.fetch(statement, *scope.params.values)
    # One experiment only: merging walks that each stopped after WALK_LIMIT runs could
    # fill a page from one experiment past where another's walk stopped unread.
    if _newest_first(terms) and len(set(query.experiment_ids)) == 1:
        walked = await _walk_newest_first(conn, query, last, wanted)
        if walked is not None:
            return walked
    scope = _scope(query)
    statement = _sorted_scan(terms, keyset, scope, last, wanted)
    return await conn.fetch(statement, *scope.params.values)


async def _rarest_value(conn: asyncpg.Connection, query: RunQuery) -> filters.Comparison | None:
    """The term of the filter's conjunction requiring a param or tag value (= or IN)
    that the fewest runs hold, if fewer than RARE_LIMIT do.

    Such a filter is answered from the holders of that value, read from the (key,
    value) index, each tested for the rest run by run: a page then costs at most
    RARE_LIMIT lookups in any experiment of any size, where walking the newest runs
    would visit thousands of them to meet a few holders, and sorting would join every
    run. Counting stops at RARE_LIMIT, so common values cost little to rule out."""
    terms = _required_values(filters.parse(query.filter, ENTITIES))
    if not terms:
        return None
    params = Params()
    counts = ", ".join(
        f"""(SELECT count(*) FROM ({_holders(term, params)} LIMIT {params.add(RARE_LIMIT)}) c)"""
        for term in terms
    )
    found = await conn.fetchrow(f"SELECT {counts}", *params.values)
    fewest, term = min(zip(found, terms, strict=True), key=lambda pair: pair[0])
    return term if fewest < RARE_LIMIT else None


def _required_values(node: filters.Node | None) -> list[filters.Comparison]:
    """The terms a run must meet (those ANDed at the top) that ask a param or tag for
    one of some text values."""
    if isinstance(node, filters.BoolOp):
        return [] if node.op == "OR" else [t for n in node.operands for t in _required_values(n)]
    if not isinstance(node, filters.Comparison) or node.negated or node.op not in ("=", "IN"):
        return []
    values = node.value if isinstance(node.value, tuple) else (node.value,)
    texts = all(isinstance(value, str) for value in values)
    return [node] if texts and node.ident.entity in ("param", "tag") else []


def _holders(term: filters.Comparison, params: Params) -> str:
    """The ids (run_id) of the runs holding a value the term asks for, from the (key,
    value) index."""
    value = filter_sql.condition("h.value", term, params, "text")
    return f"""SELECT h.run_id FROM {_TABLES[term.ident.entity]} h
               WHERE h.key = {params.add(term.ident.key)} AND {value}"""


def _sort_key(terms: list[tuple[Identifier, bool]]) -> list[paging.SortColumn]:
    """Per order term a "missing" flag and the value (columns of the subquery q), then
    the run id."""
    columns = []
    for i, (ident, ascending) in enumerate(terms):
        if ident.entity == "input":
            raise FilterError(
                ident.position, "runs are not ordered by their inputs", "INVALID_ORDER_BY"
            )
        with filters.ordering():
            sql_type = _attribute(ident)[1] if ident.entity == "attribute" else _TYPES[ident.entity]
        columns += [
            paging.SortColumn(f"q.m{i}", True, "int", f"m{i}"),
            paging.SortColumn(f"q.v{i}", ascending, sql_type, f"v{i}"),
        ]
    return [*columns, paging.SortColumn("q.tiebreak", True, "uuid", "tiebreak")]


@dataclass(frozen=True)
class _Scope:
    """The runs a query may return: the joins its filter looks values up with, the
    WHERE condition, and their parameters."""

    params: Params
    joins: str
    where: str


def _scope(query: RunQuery, per_run: bool = False) -> _Scope:
    """per_run: for a walk that tests one run at a time (its id r.run_id given). The
    run and its values are then looked up by primary key alone: the experiment and the
    keys are compared in a form no index serves (`+ 0`, `|| ''`), since without
    statistics PostgreSQL may pick runs_by_experiment or the (key, value) indexes for
    the lookup and read every entry of the experiment or the value for each run."""
    params = Params(query.project, list(query.experiment_ids))
    experiment = "r.experiment_id + 0" if per_run else "r.experiment_id"
    where = ["r.project = $1", f"{experiment} = ANY($2::bigint[])", _view(query.view_type)]
    lookups = filter_sql.Lookups(params, _TABLES, ("run_id", "r.run_id"), per_owner=per_run)
    inputs = _Inputs(params)
    node = filters.parse(query.filter, ENTITIES)
    if node is not None:
        where.append(_compile(node, params, lookups, inputs))
    return _Scope(params, " ".join([*lookups.joins, *inputs.joins()]), " AND ".join(where))


class _Inputs:
    """Terms on a run's inputs, of which a run has any number: each term holds when one
    of the inputs meets it. All of them are answered by one lookup of the run's inputs,
    one boolean column per term."""

    def __init__(self, params: Params) -> None:
        self._params = params
        self._columns: list[str] = []

    def condition(self, node: filters.Comparison | filters.NullCheck) -> str:
        field = node.ident.key
        if field not in INPUT_FIELDS:
            known = ", ".join(INPUT_FIELDS)
            raise FilterError(node.ident.position, f"inputs have {known}; not {field!r}")
        if isinstance(node, filters.NullCheck):
            matched = f"coalesce(im.i{len(self._columns)}, false)"
            self._columns.append(f"bool_or(ri.{field} <> '')")
            return f"NOT {matched}" if node.is_null else matched
        value = filter_sql.condition(f"ri.{field}", node, self._params, "text")
        self._columns.append(f"bool_or({value})")
        return f"coalesce(im.i{len(self._columns) - 1}, false)"

    def joins(self) -> list[str]:
        if not self._columns:
            return []
        columns = ", ".join(f"{sql} AS i{i}" for i, sql in enumerate(self._columns))
        return [
            f"LEFT JOIN LATERAL (SELECT {columns} FROM tracking.run_inputs ri "
            "WHERE ri.run_id = r.run_id) im ON TRUE"
        ]


def _sorted_scan(
    terms: list[tuple[Identifier, bool]],
    keyset: paging.Keyset,
    scope: _Scope,
    last: list[Any] | None,
    limit: int,
    candidates: str | None = None,
) -> str:
    """Any order: every matching run is joined to its sort values, then the top is kept.

    candidates: a statement selecting the ids (run_id) of the only runs that may match;
    each is then looked up on its own (the scope must be per run), OFFSET 0 keeping
    PostgreSQL from flattening the lookup into a join over every run."""
    params = scope.params
    outer = keyset.after(last, params) if last is not None else "TRUE"
    order = ", ".join(f"{c.expression} {'ASC' if c.ascending else 'DESC'}" for c in keyset.columns)
    return f"""SELECT * FROM ({_matching(terms, scope, candidates)}) q
               WHERE {outer} ORDER BY {order} LIMIT {params.add(limit)}"""


def _matching(terms: list[tuple[Identifier, bool]], scope: _Scope, candidates: str | None) -> str:
    """The runs matching the scope with their sort key (see _sort_key), of the
    candidates only if given (see _sorted_scan)."""
    joins, selected = _sort_values(terms, scope.params, per_run=candidates is not None)
    runs = f"""SELECT {RUN_COLUMNS}, {", ".join(selected)}
               FROM {RUN_FROM} {scope.joins} {joins}
               WHERE {scope.where}"""
    if candidates is None:
        return runs
    return f"""SELECT m.* FROM ({candidates}) c
               CROSS JOIN LATERAL ({runs} AND r.run_id = c.run_id OFFSET 0) m"""


async def _walk_one_metric(
    conn: asyncpg.Connection,
    query: RunQuery,
    term: tuple[Identifier, bool],
    last: list[Any] | None,
    wanted: int,
) -> list[asyncpg.Record] | None:
    """Ordered by one metric: walk the (key, value, run_id) index from the page's start
    and stop after `wanted` matches, so a page costs about its own size rather than the
    whole experiment. Runs without the metric (or with NaN) follow, by run id, once the
    valued ones run out. Ties go by run id in the value's direction, the index's order.

    The index holds the metric of every experiment: a filter few of its runs meet would
    make the walk visit most of them, so it gives up after WALK_LIMIT entries and
    returns None, and the caller sorts instead (_sorted_by_one_metric). The walk and the
    runs without the metric are read in one snapshot (see _walk_newest_first)."""
    ident, ascending = term
    direction, after = ("ASC", ">") if ascending else ("DESC", "<")
    rows: list[asyncpg.Record] = []
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        if last is None or not last[0]:
            # As for the newest-first walk: without statistics PostgreSQL would rather
            # sort every value of the metric than walk its index (see _walk_newest_first).
            # The runs without the metric are sorted, so sorting is allowed again for them.
            await conn.execute("SET LOCAL enable_sort = off")
            rows += await _walk_metric_values(conn, query, term, last, wanted)
            await conn.execute("SET LOCAL enable_sort = on")
            if len(rows) < wanted and await _metric_walked_too_far(conn, term, last):
                return None
        if len(rows) < wanted:
            scope = _scope(query)
            params = scope.params
            key = params.add(ident.key)
            start = "TRUE"
            if last is not None and last[0]:
                start = f"r.run_id {after} {params.add(last[2], 'uuid')}"
            rows += await conn.fetch(
                f"""SELECT {RUN_COLUMNS}, 1 AS m0, NULL::double precision AS v0,
                           r.run_id AS tiebreak
                    FROM {RUN_FROM} {scope.joins}
                    WHERE {scope.where} AND {start} AND NOT EXISTS (
                        SELECT 1 FROM tracking.latest_metrics x
                        WHERE x.run_id = r.run_id AND x.key = {key} AND x.value <> 'NaN')
                    ORDER BY r.run_id {direction} LIMIT {params.add(wanted - len(rows))}""",
                *params.values,
            )
    return rows


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
    scope = _scope(query, per_run=True)
    params = scope.params
    start = _metric_after(term, last, params)
    # The run and its filter are looked up per index entry, in order (OFFSET 0 keeps
    # PostgreSQL from flattening the lookup into a join over every run, which it
    # prefers while it has no statistics yet, as right after a bulk load).
    return await conn.fetch(
        f"""SELECT m.*, 0 AS m0, o.value AS v0, o.run_id AS tiebreak
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


async def _sorted_by_one_metric(
    conn: asyncpg.Connection,
    query: RunQuery,
    term: tuple[Identifier, bool],
    last: list[Any] | None,
    wanted: int,
    rare: filters.Comparison | None,
) -> list[asyncpg.Record]:
    """What _walk_one_metric returns, in its order, by sorting every matching run (of
    the holders of a rare value only, if given; see _rarest_value)."""
    direction, after = ("ASC", ">") if term[1] else ("DESC", "<")
    scope = _scope(query, per_run=rare is not None)
    params = scope.params
    candidates = _holders(rare, params) if rare is not None else None
    start = "TRUE"
    if last is not None and last[0]:
        start = f"q.m0 = 1 AND q.tiebreak {after} {params.add(last[2], 'uuid')}"
    elif last is not None:
        cursor = f"({params.add(last[1], 'double precision')}, {params.add(last[2], 'uuid')})"
        start = f"(q.m0 = 1 OR (q.v0, q.tiebreak) {after} {cursor})"
    return await conn.fetch(
        f"""SELECT * FROM ({_matching([term], scope, candidates)}) q WHERE {start}
            ORDER BY q.m0, q.v0 {direction}, q.tiebreak {direction}
            LIMIT {params.add(wanted)}""",
        *params.values,
    )


def _newest_first(terms: list[tuple[Identifier, bool]]) -> bool:
    """The default order, which the runs_by_experiment index holds."""
    (ident, ascending), *others = terms
    return (
        not others and ident.entity == "attribute" and ident.key == "start_time" and not ascending
    )


async def _walk_newest_first(
    conn: asyncpg.Connection, query: RunQuery, last: list[Any] | None, wanted: int
) -> list[asyncpg.Record] | None:
    """Newest first in one experiment: walk its (experiment_id, start_time DESC, run_id)
    index from the page's start, the filter tested run by run, and stop after `wanted`
    matches, so a page costs about its own size rather than sorting the experiment. A
    start time is never NULL: the "missing" flag is always 0.

    The walk reads each run's row as it goes: the filter is tested on that row, not on
    the run looked up again.

    A filter that few runs meet would make the walk visit most of the experiment, one
    lookup per run: the walk gives up after WALK_LIMIT runs and returns None, and the
    caller sorts instead (hash joins over the filter's keys, chosen by the planner)."""
    scope = _scope(query, per_run=True)
    params = scope.params
    start = _newer_after(last, params)
    limit, walked = params.add(wanted), params.add(WALK_LIMIT)
    # Sorting is disabled for the statement: without statistics (right after a bulk
    # load) PostgreSQL expects the filter to keep a run or two and would rather sort
    # every run of the experiment than walk the index, a hundred times slower. OFFSET 0
    # keeps the filter a lookup per index entry (see _walk_one_metric). One snapshot for
    # the walk and the count after it, so a run purged in between cannot make a walk
    # that stopped short look complete. (A search is a read: it never runs inside a
    # recorded write's transaction, where SET LOCAL would outlive this block.)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute("SET LOCAL enable_sort = off")
        rows = await conn.fetch(
            f"""SELECT w.* FROM (SELECT DISTINCT unnest($2::bigint[])) AS x(experiment_id)
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
        if len(rows) == wanted or not await _walked_too_far(conn, query, last):
            return rows
    return None


def _newer_after(last: list[Any] | None, params: Params) -> str:
    """Runs (as o) after the page's start in newest-first order."""
    if last is None:
        return "TRUE"
    time, run_id = params.add(last[1], "bigint"), params.add(last[2], "uuid")
    # The first bound lets the index scan start at the page's start instead of at the
    # newest run, so a deep page costs its own size.
    return f"(o.start_time <= {time} AND (o.start_time < {time} OR o.run_id > {run_id}))"


async def _walked_too_far(
    conn: asyncpg.Connection, query: RunQuery, last: list[Any] | None
) -> bool:
    """Whether the experiment holds more than WALK_LIMIT runs from the page's start (so
    the walk may have stopped short)."""
    params = Params(list(query.experiment_ids))
    start = _newer_after(last, params)
    walked = params.add(WALK_LIMIT)
    return bool(
        await conn.fetchval(
            f"""SELECT count(*) > {walked} FROM (
                    SELECT 1 FROM tracking.runs o
                    WHERE o.experiment_id = ANY($1::bigint[]) AND {start}
                    LIMIT {walked} + 1
                ) c""",
            *params.values,
        )
    )


def _view(view_type: ViewType) -> str:
    active = "(r.lifecycle_stage = 1 AND e.lifecycle_stage = 1)"
    if view_type == ViewType.ALL:
        return "TRUE"
    return f"NOT {active}" if view_type == ViewType.DELETED_ONLY else active


def _sort_values(
    terms: list[tuple[Identifier, bool]], params: Params, per_run: bool = False
) -> tuple[str, list[str]]:
    """Joins for the sort values, and the SELECT items of the sort key (see _sort_key).
    per_run: look the values up by run id alone (see _scope)."""
    key_column = "key || ''" if per_run else "key"
    joins, selected = [], []
    for i, (ident, _) in enumerate(terms):
        if ident.entity == "attribute":
            value_sql, sql_type = _attribute(ident)
        else:
            # A join, not a subquery per row: PostgreSQL can hash it in one pass.
            table, sql_type = _TABLES[ident.entity], _TYPES[ident.entity]
            joins.append(
                f"LEFT JOIN {table} o{i} "
                f"ON o{i}.run_id = r.run_id AND o{i}.{key_column} = {params.add(ident.key)}"
            )
            value_sql = f"o{i}.value"
        # NaN counts as missing: it sorts last, like NULL, whichever the direction.
        nan_free = f"NULLIF({value_sql}, 'NaN')" if sql_type == "double precision" else value_sql
        selected += [f"({nan_free} IS NULL)::int AS m{i}", f"{nan_free} AS v{i}"]
    selected.append("r.run_id AS tiebreak")
    return " ".join(joins), selected


def _attribute(ident: Identifier) -> tuple[str, str]:
    if ident.key not in ATTRIBUTES:
        known = ", ".join(ATTRIBUTES)
        raise FilterError(
            ident.position, f"unknown run attribute {ident.key!r}; use one of {known}"
        )
    return ATTRIBUTES[ident.key]


def _compile(
    node: filters.Node, params: Params, lookups: filter_sql.Lookups, inputs: _Inputs
) -> str:
    if isinstance(node, filters.BoolOp):
        operands = (_compile(n, params, lookups, inputs) for n in node.operands)
        return "(" + f" {node.op} ".join(operands) + ")"
    if node.ident.entity == "attribute":
        return _attribute_condition(node, params)
    if node.ident.entity == "input":
        return inputs.condition(node)
    return lookups.condition(node, _TYPES[node.ident.entity])


def _attribute_condition(node: filters.Comparison | filters.NullCheck, params: Params) -> str:
    column, sql_type = _attribute(node.ident)
    if isinstance(node, filters.NullCheck):
        return f"{column} IS {'' if node.is_null else 'NOT '}NULL"
    if node.ident.key == "status":
        node = _status_as_number(node)
    return filter_sql.condition(column, node, params, sql_type)


def _status_as_number(node: filters.Comparison) -> filters.Comparison:
    """attributes.status compares with status names; the column holds their numbers."""
    if node.op not in ("=", "!=", "IN"):
        raise FilterError(node.ident.position, "status supports =, != and IN")
    names = node.value if isinstance(node.value, tuple) else (node.value,)
    numbers = []
    for name in names:
        if not isinstance(name, str) or name.upper() not in RunStatus.__members__:
            known = ", ".join(RunStatus.__members__)
            raise FilterError(node.ident.position, f"status is one of {known}")
        numbers.append(float(RunStatus[name.upper()]))
    value = tuple(numbers) if node.op == "IN" else numbers[0]
    return filters.Comparison(node.ident, node.op, value, node.negated)
