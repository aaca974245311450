"""Search runs: how a page is found (a walk, a rare value's holders, or a sort), keyset
paging, and loading the page's runs. The filter's SQL is in run_filters.py, the walks
in walks.py.

Ordering puts a metric's NaN, then missing values, last in both directions: every order
term sorts first on its value's rank (run_filters.VALUED, NAN, MISSING), then on the
value. The run id breaks ties, which makes the sort key unique and the keyset page
token exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from ...common import filter_sql, filters, paging, sql
from ...common.filters import FilterError, Identifier
from ...common.read_slots import SEARCHES, ReadSlots
from ...common.sql import Params
from ..model import Run
from . import sizes, walks
from .pages import RunPage, load_page
from .run_filters import (
    TABLES,
    TYPES,
    VALUE_PREFIX,
    RunQuery,
    Scope,
    parse_filter,
    parse_order,
    run_scope,
    sort_attribute,
    sort_values,
)
from .runs import RUN_COLUMNS, RUN_FROM

DEFAULT_ORDER = ["attributes.start_time DESC"]
# Orders by a metric rank its NaN before its absence (run_filters.NAN); a token made
# before they did, when the two ranked alike, is refused rather than misread (its
# query's fingerprint lacks this), which could have repeated runs.
METRIC_RANKS = "metric ranks: value, NaN, none"
MAX_ORDER_TERMS = 10
# A page token holds its last run's sort values: at most MAX_ORDER_TERMS tag values of
# 8,000 characters, each six bytes at worst in JSON (a control character's "\u0001"),
# then base64's third more.
MAX_TOKEN_LENGTH = 640 * 1024
# How many of a page's runs an answer holds, given the page and the length of the token
# after a count of them.
Fitting = Callable[[RunPage, Callable[[int], int]], int]
# A filter requiring a param or tag value fewer runs than this hold (in any experiment)
# is answered from those runs alone (see _rarest_value).
RARE_LIMIT = 1_000
# A sort tests the filter run by run when the experiments hold at most this many runs
# (see _sorts_run_by_run), or while one of these tables holds UNANALYZED_BYTES without
# statistics (a smaller one costs little however it is joined, and autovacuum analyzes
# a table once 50 of its rows changed).
PER_RUN_SORT_LIMIT = 2_000
STATISTICS_TABLES = ("runs", "params", "tags", "latest_metrics")
UNANALYZED_BYTES = 64 * 1024
# The column of a sorted scan's rows counting the bytes of their text sort values, theirs
# and those before them (_sorted_scan).
SORTED_THROUGH = "sorted_through"


async def search_runs(pool: asyncpg.Pool, query: RunQuery) -> paging.Page[Run]:
    page, next_page_token = await search_page(pool, query)
    return paging.Page(page.runs(), next_page_token)


async def search_page(
    pool: asyncpg.Pool,
    query: RunQuery,
    fitting: Fitting | None = None,
    slots: ReadSlots | None = None,
) -> tuple[RunPage, str]:
    """The page of runs the query asks for, by column, and the next page's token.
    fitting(page, token_bytes) says how many of the page's runs its answer holds beside
    the token after them, token_bytes(count) long (all runs by default): the token then
    continues after those. A page loads only the runs that hold
    paging.MAX_PAGE_LOAD_BYTES together (one at least), as run_sizes counts them.

    A page found by sorting the matching runs waits for a turn of slots' searches
    (read_slots.py), which may take seconds each over tens of thousands of runs. A
    page the walks find (or a rare value's holders) costs about its size and waits for
    none: the newest runs, or those of the best metric, are listed at once beside a
    dozen sorts by several params. A walk that gives up only then waits for its turn."""
    terms = [parse_order(text) for text in (query.order_by or DEFAULT_ORDER)]
    keyset = paging.Keyset(
        _sort_key(terms),
        "runs",
        query.project,
        sorted(query.experiment_ids),
        query.filter,
        list(query.order_by),
        int(query.view_type),
        *([METRIC_RANKS] if any(ident.entity == "metric" for ident, _ in terms) else []),
        max_token_length=MAX_TOKEN_LENGTH,
    )
    last = keyset.last(query.page_token)
    wanted = query.page_size + 1
    found = None
    if _walked(terms):
        found = await _read_page(pool, _Reading(query, terms, keyset, last, wanted, walk=True))
    if found is None:
        async with slots.turn(SEARCHES) if slots else contextlib.nullcontext():
            found = await _read_page(pool, _Reading(query, terms, keyset, last, wanted))
    assert found is not None  # only a walk gives up
    rows, page, loaded = found
    kept = loaded
    if fitting and loaded:
        kept = fitting(page, lambda count: len(keyset.next_token(rows, count)))
    return page.head(kept) if kept < loaded else page, keyset.next_token(rows, kept)


@dataclass(frozen=True)
class _Reading:
    """What a page's read is given: the query, its order's terms and keyset, the last
    run's sort values of the page before (None for the first page), how many rows are
    wanted, and whether the page is walked (a walk may give up: _read_page then
    answers None) or sorted."""

    query: RunQuery
    terms: list[tuple[Identifier, bool]]
    keyset: paging.Keyset
    last: list[Any] | None
    wanted: int
    walk: bool = False


async def _read_page(
    pool: asyncpg.Pool, reading: _Reading
) -> tuple[list[asyncpg.Record], RunPage, int] | None:
    """The page's rows, its runs as loaded, and how many of them were (None: the walk
    gave up)."""
    # One snapshot for picking the page's runs and loading them: a collection claiming
    # a run between the two would have it loaded with part of its history.
    async with (
        pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        rows = await _page_rows(conn, reading)
        if rows is None:
            return None
        taken = _within_sort_budget(rows, reading.query.page_size)
        loaded = await sizes.loadable(conn, rows[:taken], paging.MAX_PAGE_LOAD_BYTES)
        return rows, await load_page(conn, rows[:loaded]), loaded


def _walked(terms: list[tuple[Identifier, bool]]) -> bool:
    """Whether pages in this order are walked (walks.py): by one metric, or newest first."""
    return _by_one_metric(terms) or walks.newest_first(terms)


def _by_one_metric(terms: list[tuple[Identifier, bool]]) -> bool:
    return len(terms) == 1 and terms[0][0].entity == "metric"


async def _page_rows(conn: asyncpg.Connection, reading: _Reading) -> list[asyncpg.Record] | None:
    """The page's rows (one more than the page, to know whether more follow); None when
    the walk gives up."""
    query, terms, last, wanted = reading.query, reading.terms, reading.last, reading.wanted
    if not query.experiment_ids:  # each was past the largest id an experiment can have
        return []
    rare = await _rarest_value(conn, query)
    if rare is None and reading.walk and _by_one_metric(terms):
        return await walks.walk_one_metric(conn, query, terms[0], last, wanted)
    if rare is None and reading.walk:
        return await walks.walk_newest_first(conn, query, last, wanted)
    scope, candidates = await _sort_scope(conn, query, rare)
    if _by_one_metric(terms):
        statement = _sorted_by_one_metric(scope, terms[0], last, wanted, candidates)
    else:
        statement = _sorted_scan(terms, reading.keyset, scope, last, wanted, candidates)
    if candidates is not None:  # each tested on its own: one plan serves any values
        return await conn.fetch(statement, *scope.params.values)
    # How to join the matching runs depends on how many the filter's values keep: the
    # same sort, asked again, looked every match up one by one once planned for any
    # values, where hash joins take half the time.
    return await sql.fetch_planned(conn, statement, *scope.params.values)


async def _sort_scope(
    conn: asyncpg.Connection, query: RunQuery, rare: filters.Comparison | None
) -> tuple[Scope, str | None]:
    """The scope of a sort, and a statement selecting the only runs it may return, each
    then tested on its own: the holders of a rare value, or the experiments' runs when
    that is the safer sort (_sorts_run_by_run). None: the planner joins the matching
    runs as it sees fit."""
    if rare is None and not await _sorts_run_by_run(conn, query):
        return run_scope(query), None
    scope = run_scope(query, per_run=True)
    if rare is not None:
        return scope, _candidates(rare, scope.params)
    experiments = (
        f"SELECT c.run_id FROM tracking.runs c WHERE c.experiment_id = ANY({scope.experiments})"
    )
    return scope, experiments


async def _sorts_run_by_run(conn: asyncpg.Connection, query: RunQuery) -> bool:
    """Whether a sort tests the filter on the experiments' runs one by one, looked up by
    primary key (about 7 µs a run): when they hold at most PER_RUN_SORT_LIMIT runs, or
    while a table of runs or of their values is large and has no statistics yet (right
    after a bulk load). PostgreSQL then expects each term of the filter to keep a row
    or two, and joins two terms' holders, over every experiment, in a nested loop
    quadratic in them: over a minute with 100,000 runs, even for an experiment of 200.
    With statistics, its hash joins sort a large experiment faster (70-220 ms over
    100,000 runs, where run by run takes 700)."""
    experiments = list(query.experiment_ids)
    return bool(
        await conn.fetchval(
            """SELECT (SELECT count(*) FROM (
                           SELECT 1 FROM tracking.runs o WHERE o.experiment_id = ANY($1::bigint[])
                           LIMIT $2 + 1) o) <= $2
                   OR EXISTS (
                       SELECT 1 FROM unnest($3::text[]) AS t(name)
                       WHERE pg_relation_size(('tracking.' || t.name)::regclass) >= $4
                         AND NOT EXISTS (
                             SELECT 1 FROM pg_stats s WHERE s.schemaname = 'tracking'
                             AND s.tablename = t.name AND s.attname = 'run_id'))""",
            experiments,
            PER_RUN_SORT_LIMIT,
            list(STATISTICS_TABLES),
            UNANALYZED_BYTES,
        )
    )


async def _rarest_value(conn: asyncpg.Connection, query: RunQuery) -> filters.Comparison | None:
    """The term of the filter's conjunction requiring a param or tag value or an
    input's URI (= or IN) that the fewest runs hold, if fewer than RARE_LIMIT do.

    Such a filter is answered from the holders of that value, read from the (key,
    value) index (run_inputs_by_uri for a URI), each tested for the rest run by run:
    "which runs used this artifact" then costs what it finds. A page costs at most
    RARE_LIMIT lookups in any experiment of any size, where walking the newest runs
    would visit thousands of them to meet a few holders, and sorting would join every
    run. Counting stops at RARE_LIMIT, so common values cost little to rule out."""
    terms = _required_values(parse_filter(query.filter))
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
    """The terms a run must meet (those ANDed at the top) that ask a param or tag, or
    an input's URI, for one of some text values."""
    if isinstance(node, filters.BoolOp):
        return [] if node.op == "OR" else [t for n in node.operands for t in _required_values(n)]
    if not isinstance(node, filters.Comparison) or node.negated or node.op not in ("=", "IN"):
        return []
    values = node.values
    texts = all(isinstance(value, str) for value in values)
    ident = node.ident
    indexed = ident.entity in ("param", "tag") or (ident.entity, ident.key) == ("input", "uri")
    return [node] if texts and indexed else []


def _holders(term: filters.Comparison, params: Params) -> str:
    """The ids (run_id) of the runs holding a value the term asks for, from the (key,
    value) index, or from run_inputs_by_uri for an input's URI."""
    if term.ident.entity == "input":
        uri = filter_sql.condition("h.uri", term, params, "text")
        return f"SELECT h.run_id FROM tracking.run_inputs h WHERE {uri}"
    value = filter_sql.prefixed_condition("h.value", term, params, VALUE_PREFIX)
    return f"""SELECT h.run_id FROM {TABLES[term.ident.entity]} h
               WHERE h.key = {params.add(term.ident.key)} AND {value}"""


def _candidates(term: filters.Comparison, params: Params) -> str:
    """The holders of a rare value (see _rarest_value), each once: a run may hold a URI
    in several inputs (of other kinds or contexts). Counting holders needs no DISTINCT,
    which would read every holder of a common URI before the count's LIMIT."""
    return f"SELECT DISTINCT c.run_id FROM ({_holders(term, params)}) c"


def _sort_key(terms: list[tuple[Identifier, bool]]) -> list[paging.SortColumn]:
    """Per order term a "missing" flag and the value (columns of the subquery q), then
    the start time, newest first (see _ties_by_start_time), then the run id."""
    columns, seen = [], set()
    for i, (ident, ascending) in enumerate(terms):
        if ident.entity in ("input", "dataset"):
            raise FilterError(
                ident.position, "runs are not ordered by their inputs", "INVALID_ORDER_BY"
            )
        if (ident.entity, ident.key) in seen:  # as MLflow, and experiments' orders
            raise FilterError(
                ident.position, f"{_field(ident)} is ordered by twice", "INVALID_ORDER_BY"
            )
        seen.add((ident.entity, ident.key))
        with filters.ordering():
            sql_type = (
                sort_attribute(ident)[1] if ident.entity == "attribute" else TYPES[ident.entity]
            )
        columns += [
            paging.SortColumn(f"q.m{i}", True, "int", f"m{i}"),
            paging.SortColumn(f"q.v{i}", ascending, sql_type, f"v{i}", nullable=True),
        ]
    if _ties_by_start_time(terms):
        columns.append(paging.SortColumn("q.start_time", False, "bigint", "start_time"))
    return [*columns, paging.SortColumn("q.tiebreak", True, "uuid", "tiebreak")]


def _field(ident: Identifier) -> str:
    """A field as an order names it: `params.lr`, or an attribute by its name alone."""
    return ident.key if ident.entity == "attribute" else f"{ident.entity}s.{ident.key}"


def _ties_by_start_time(terms: list[tuple[Identifier, bool]]) -> bool:
    """Whether the order's ties go newest first before they go by run id, as MLflow
    orders them unless the order names the start time. One metric's order leaves it
    out: its pages go on along the index of (key, value, run id), where sorting the
    ties by start time would sort every run of a value many runs hold, page after page."""
    named = any(ident.entity == "attribute" and ident.key == "start_time" for ident, _ in terms)
    return not (_by_one_metric(terms) or named)


def _sorted_scan(
    terms: list[tuple[Identifier, bool]],
    keyset: paging.Keyset,
    scope: Scope,
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
    page = f"""SELECT * FROM ({_matching(terms, scope, candidates)}) q
               WHERE {outer} ORDER BY {order} LIMIT {params.add(limit)}"""
    texts = [
        f"coalesce(octet_length({c.expression}), 0)" for c in keyset.columns if c.sql_type == "text"
    ]
    if not texts:
        return page
    # Text sort values may be long (a tag's 8,000 characters, ten of them a run): only
    # the runs whose values begin within the page's load budget (or at its end) leave
    # the database, and the second in any case: so the run after the last a page takes
    # (_within_sort_budget) comes too, telling that more follow.
    own = " + ".join(texts)
    return f"""SELECT * FROM (
                   SELECT q.*, sum({own}) OVER w AS {SORTED_THROUGH}, {own} AS sorted_own,
                       row_number() OVER w AS sorted_n
                   FROM ({page}) q
                   WINDOW w AS (ORDER BY {order} ROWS UNBOUNDED PRECEDING)
               ) q
               WHERE q.sorted_n <= 2
                  OR q.{SORTED_THROUGH} - q.sorted_own <= {params.add(paging.MAX_PAGE_LOAD_BYTES)}
               ORDER BY {order}"""


def _within_sort_budget(rows: list[asyncpg.Record], page_size: int) -> int:
    """How many of rows a page takes by the bytes of their text sort values: those that
    end within the load budget (one at least). The query left out the runs after the
    first past it (and after the second), which it kept to show that the page is cut
    there."""
    if not rows or SORTED_THROUGH not in rows[0]:  # a field of that name
        return page_size
    for count, row in enumerate(rows[:page_size]):
        if row[SORTED_THROUGH] > paging.MAX_PAGE_LOAD_BYTES:
            return max(count, 1)
    return page_size


def _matching(terms: list[tuple[Identifier, bool]], scope: Scope, candidates: str | None) -> str:
    """The runs matching the scope with their sort key (see _sort_key), of the
    candidates only if given (see _sorted_scan)."""
    joins, selected = sort_values(terms, scope.params, per_run=candidates is not None)
    runs = f"""SELECT {RUN_COLUMNS}, {", ".join(selected)}
               FROM {RUN_FROM} {scope.joins} {joins}
               WHERE {scope.where}"""
    if candidates is None:
        return runs
    return f"""SELECT m.* FROM ({candidates}) c
               CROSS JOIN LATERAL ({runs} AND r.run_id = c.run_id OFFSET 0) m"""


def _sorted_by_one_metric(
    scope: Scope,
    term: tuple[Identifier, bool],
    last: list[Any] | None,
    wanted: int,
    candidates: str | None,
) -> str:
    """What walk_one_metric returns, in its order, by sorting every matching run (of
    the candidates only, if given; see _sort_scope)."""
    direction, after = ("ASC", ">") if term[1] else ("DESC", "<")
    params = scope.params
    start = "TRUE"
    if last is not None and last[0]:  # among the runs ranked NaN or MISSING
        rank, run = params.add(last[0], "int"), params.add(last[2], "uuid")
        start = f"(q.m0 > {rank} OR (q.m0 = {rank} AND q.tiebreak {after} {run}))"
    elif last is not None:
        cursor = f"({params.add(last[1], 'double precision')}, {params.add(last[2], 'uuid')})"
        start = f"(q.m0 > 0 OR (q.v0, q.tiebreak) {after} {cursor})"
    return f"""SELECT * FROM ({_matching([term], scope, candidates)}) q WHERE {start}
               ORDER BY q.m0, q.v0 {direction}, q.tiebreak {direction}
               LIMIT {params.add(wanted)}"""
