"""Loading a page of runs: their rows, and what was logged to them, by column.

What was logged to the runs of a page is read in one statement that answers one row:
for each table, one array per column over the whole page, grouped by run in page
order. A thousand runs' five params each are then five thousand array elements,
decoded in C, not a thousand rows of nested arrays; the service builds its answer
from those columns (run by run, or as they are for a columnar SearchRuns).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, TypeVar

import asyncpg
import numpy as np

from ..model import LifecycleStage, MetricPoint, Run, RunInfo, RunInput, RunStatus

T = TypeVar("T")


def _by_run(table: str, columns: str, order: str) -> str:
    """The rows of tracking.<table> of the page's runs ($1), one array per column (the
    run's position in the page first), sorted by position then `order`. Each run's
    rows are looked up on the primary key: OFFSET 0 keeps PostgreSQL from flattening
    the lookup into a join, which right after a bulk load (no statistics yet) it would
    hash over the whole table. Every aggregate sorts by the same key, which PostgreSQL
    16 and later do once."""
    sort = f"page.position, {order}"
    arrays = ", ".join(
        f"array_agg({c} ORDER BY {sort})" for c in ["page.position", *columns.split()]
    )
    return f"""(SELECT {arrays}
        FROM unnest($1::uuid[]) WITH ORDINALITY AS page(run_id, position)
        CROSS JOIN LATERAL (
            SELECT * FROM tracking.{table} x WHERE x.run_id = page.run_id OFFSET 0
        ) x) AS {table}"""


_LOGGED = f"""SELECT * FROM
    {_by_run("latest_metrics", "x.key x.value x.timestamp_ms x.step", "x.key")},
    {_by_run("params", "x.key x.value", "x.key")},
    {_by_run("tags", "x.key x.value", "x.key")},
    {_by_run("run_inputs", "x.kind x.name x.uri x.digest x.context", "x.kind, x.uri, x.context")}"""


@dataclass(frozen=True)
class Logged:
    """One table's rows for a page, by column: run i's are rows starts[i] to
    starts[i + 1] (excluded) of every column."""

    starts: list[int]
    columns: tuple[list[Any], ...]

    @classmethod
    def of(cls, runs: int, positions: list[int] | None, *columns: list[Any] | None) -> Logged:
        """From the arrays of _by_run (NULL when the page has no rows in the table)."""
        counts = np.bincount(np.asarray(positions or [], np.int64), minlength=runs + 1)[1:]
        starts = [0, *np.cumsum(counts).tolist()]
        return cls(starts, tuple(column or [] for column in columns))

    def counts(self) -> list[int]:
        return [end - start for start, end in pairwise(self.starts)]

    def head(self, runs: int) -> Logged:
        """The rows of the first runs only."""
        end = self.starts[runs]
        return Logged(self.starts[: runs + 1], tuple(column[:end] for column in self.columns))

    def per_run(self, make: Callable[..., T]) -> list[T]:
        """Each run's rows, as make(*columns) makes them of the run's slice of each column."""
        return [
            make(*(column[start:end] for column in self.columns))
            for start, end in pairwise(self.starts)
        ]


@dataclass(frozen=True)
class RunPage:
    """Runs as loaded: their infos and what was logged to them, in page order."""

    infos: list[RunInfo]
    metrics: Logged  # key, value, timestamp_ms, step
    params: Logged  # key, value
    tags: Logged  # key, value
    inputs: Logged  # kind, name, uri, digest, context

    def head(self, runs: int) -> RunPage:
        """The page's first runs only."""
        return RunPage(self.infos[:runs], *(table.head(runs) for table in self._tables()))

    def _tables(self) -> tuple[Logged, ...]:
        return (self.metrics, self.params, self.tags, self.inputs)

    def entries(self) -> int:
        """How many params, tags, metric keys and inputs the page's runs hold."""
        return sum(table.starts[-1] for table in self._tables())

    def runs(self) -> list[Run]:
        # Each run's slice of each column is made into its points or pairs at once:
        # zipping slices rather than cutting a list of pairs made of whole columns makes
        # no tuple per pair, three times faster for a run of 110,000 tags (10 ms, not 30).
        logged = zip(
            self.metrics.per_run(_points),
            self.params.per_run(_pairs),
            self.tags.per_run(_pairs),
            self.inputs.per_run(_inputs),
            strict=True,
        )
        return [
            Run(info, metrics, params, tags, inputs)
            for info, (metrics, params, tags, inputs) in zip(self.infos, logged, strict=True)
        ]


def _points(*columns: list[Any]) -> list[MetricPoint]:
    return list(map(MetricPoint, *columns))


def _pairs(keys: list[str], values: list[str]) -> dict[str, str]:
    return dict(zip(keys, values, strict=True))


def _inputs(*columns: list[Any]) -> list[RunInput]:
    return list(map(RunInput, *columns))


async def load_page(conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> RunPage:
    """The runs of rows (RUN_COLUMNS), in order, with what was logged to them."""
    columns = await _logged(conn, [row["run_id"] for row in rows]) if rows else [None] * _WIDTH
    tables = [Logged.of(len(rows), *columns[at:end]) for at, end in _TABLE_COLUMNS]
    return RunPage([run_info(row) for row in rows], *tables)


async def _logged(conn: asyncpg.Connection, run_ids: list[Any]) -> list[Any]:
    # A run's few rows per table are read fastest by a plain index scan; with or without
    # statistics PostgreSQL prefers a bitmap scan, about 1.5 times slower over a page.
    # It plans a lookup of any run by the table's average rows a run, which a few runs
    # of 100,000 tags raise to thousands: without the bitmap scan it then chose to scan
    # the whole table for each run of the page (1.75 s a page over 650,000 tags, not
    # 1 ms), so the scans of whole tables are off too. Within a caller's transaction
    # (CreateRun's, a search page's snapshot) the settings last until that ends, which
    # only records the call's answer or ends the read.
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off")
        row = await conn.fetchrow(_LOGGED, run_ids)
    assert row is not None  # aggregates answer one row
    return list(row.values())


# Where each table's arrays are in _LOGGED's row: the positions, then its columns.
_TABLE_COLUMNS = [(0, 5), (5, 8), (8, 11), (11, 17)]
_WIDTH = _TABLE_COLUMNS[-1][1]


def run_info(row: asyncpg.Record) -> RunInfo:
    parent = row["parent_run_id"]
    return RunInfo(
        project=row["project"],
        run_id=row["run_id"].hex,
        experiment_id=str(row["experiment_id"]),
        run_name=row["run_name"],
        user_id=row["user_id"],
        status=_STATUSES[row["status"]],
        start_time_ms=row["start_time"],
        end_time_ms=row["end_time"],
        artifact_uri=row["artifact_uri"],
        lifecycle_stage=_STAGES[row["lifecycle_stage"]],
        parent_run_id=parent.hex if parent else None,
    )


# Looked up rather than called: calling an enum class costs a page of runs milliseconds.
_STATUSES = {int(status): status for status in RunStatus}
_STAGES = {int(stage): stage for stage in LifecycleStage}
