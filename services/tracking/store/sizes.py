"""What a run holds, against the bound that keeps any run within one message.

Each entry of a run (param, tag, latest metric, input) counts its strings' bytes in
UTF-8 and ENTRY_BYTES more. run_sizes holds each run's total (migration 0010): a write
that adds, replaces or deletes entries changes it in the same statement or transaction,
failing whole when the total would pass the bound. Two writes racing to add the same new
key both count it, so the total may be above what the run holds, never below; a write
refused is tried once more after the run is counted exactly (within_bound).
"""

from __future__ import annotations

import functools
import itertools
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import numpy as np

from ...common import idempotency
from ...common.errors import InvalidArgument
from ...common.sql import fetch_planned, unguarded
from ..model import Batch

T = TypeVar("T")
# What an entry counts beside its strings (tracking.run_bytes counts the same).
ENTRY_BYTES = 32
# The constraint name of the error tracking.run_bytes_within raises.
_BOUND = "run_bytes_bound"


def bound_for(max_message_bytes: int) -> int:
    """The bound of a run's entries for a server's largest message: a quarter of it,
    so that a run, its framing and the longest page token fit in one response."""
    return max_message_bytes // 4


def entry_bytes(*strings: str) -> int:
    return sum(len(s.encode()) for s in strings) + ENTRY_BYTES


def growing(added: str, run: str, bound: str) -> str:
    """A statement's CTE that adds what the query `added` (one row, column bytes, NULL
    when nothing was added) says to the total of run (a placeholder), or fails past
    bound (SQL text)."""
    return f"""grown AS (
    UPDATE tracking.run_sizes s SET bytes = tracking.run_bytes_within(s.bytes + n.bytes, {bound})
    FROM ({added}) n WHERE s.run_id = {run} AND n.bytes IS NOT NULL
)"""


async def grow(conn: asyncpg.Connection, run_id: uuid.UUID, added: int, bound: int) -> None:
    """Adds added bytes (less than none when entries were replaced by shorter ones) to
    the run's total within the caller's transaction, or fails past bound."""
    if added:
        await conn.execute(
            """UPDATE tracking.run_sizes SET bytes = tracking.run_bytes_within(bytes + $2, $3)
               WHERE run_id = $1""",
            run_id,
            added,
            bound,
        )


async def shrink(conn: asyncpg.Connection, run_id: uuid.UUID, freed: int) -> None:
    """Takes freed bytes off the run's total: a delete is never refused, even on a run
    that held more than its bound before there was one."""
    await conn.execute(
        "UPDATE tracking.run_sizes SET bytes = bytes - $2 WHERE run_id = $1", run_id, freed
    )


def check_new_run(held: int, bound: int) -> None:
    """Refuses a new run holding held bytes (its first tags) past bound.

    Raises:
        InvalidArgument: RUN_TOO_LARGE.
    """
    if held > bound:
        raise _too_large("a run", bound)


def check_batch(batch: Batch, run_id: uuid.UUID, bound: int) -> None:
    """Refuses a batch whose own entries pass bound: written, the run holds each of its
    params and tags and a latest point of each key it logs, so no run can take it
    (writing it to learn so costs seconds for a large one).

    Raises:
        InvalidArgument: RUN_TOO_LARGE.
    """
    held = sum(
        entry_bytes(k, v) for entries in (batch.params, batch.tags) for k, v in entries.items()
    )
    keys = batch.metrics.keys
    if held + sum(entry_bytes(k) for k in keys) <= bound:
        return  # nearly always: the rest counts only the keys the points log
    logged = np.unique(batch.metrics.key_indexes)
    if held + sum(entry_bytes(keys[i]) for i in logged) > bound:
        raise _too_large(f"run {run_id.hex}", bound, {"run_id": run_id.hex})


async def within_bound(
    pool: asyncpg.Pool, run_id: uuid.UUID, bound: int, write: Callable[[], Awaitable[T]]
) -> T:
    """write(), which fails whole past bound: then the run is counted exactly (its total
    may count a key two racing writes added) and write tried once more. In a call's
    transaction (a write recorded by its request id), the count waits for that
    transaction to give its connection back (idempotency.Outside): the whole call then
    runs once more, and its write is tried after the count.

    Raises:
        InvalidArgument: RUN_TOO_LARGE, the run would still pass the bound.
    """
    try:
        return await write()
    except asyncpg.CheckViolationError as error:
        if error.constraint_name != _BOUND:
            raise
    if not idempotency.in_call_transaction():
        await _recount(pool, run_id)
    elif not idempotency.after_outside():  # counted once the call's connection is back
        raise idempotency.Outside(functools.partial(_recount, pool, run_id))
    try:
        return await write()
    except asyncpg.CheckViolationError as error:
        if error.constraint_name != _BOUND:
            raise
        raise _too_large(f"run {run_id.hex}", bound, {"run_id": run_id.hex}) from None


async def _recount(pool: asyncpg.Pool, run_id: uuid.UUID) -> None:
    # On a connection of its own, committed at once, never in a call's transaction
    # (within_bound asks for it outside one): that would hold the row's lock until the
    # call ends, while the write tried again takes the run's other locks.
    async with pool.acquire() as conn, conn.transaction():
        # Waits for writes that changed the total and have not committed: the count,
        # a statement begun after, sees their entries; later writes add their own.
        await conn.execute("SELECT 1 FROM tracking.run_sizes WHERE run_id = $1 FOR UPDATE", run_id)
        await conn.execute(
            "UPDATE tracking.run_sizes SET bytes = tracking.run_bytes($1) WHERE run_id = $1",
            run_id,
        )


# How long the start-up count waits for a transaction that holds a run it counts.
HELD_RUN_WAIT_SECONDS = 60


async def held_past(pool: asyncpg.Pool, limit: int) -> tuple[int, int]:
    """How many runs hold more than limit bytes, and the most one of them holds (0 if
    none).

    Runs whose totals pass it are counted exactly first, as within_bound counts them:
    racing writes may have left a total above what its run holds. Without the statement
    timeout: counting many runs may rightly take longer, and a start-up check cut short
    would fail every start. A run held by another transaction is waited for at most
    HELD_RUN_WAIT_SECONDS (asyncpg.LockNotAvailableError past that)."""
    async with pool.acquire() as conn, conn.transaction():
        await unguarded(conn)
        await conn.execute(f"SET LOCAL lock_timeout = '{HELD_RUN_WAIT_SECONDS}s'")
        try:
            past = await conn.fetch(
                "SELECT run_id FROM tracking.run_sizes WHERE bytes > $1 FOR UPDATE", limit
            )
        except asyncpg.UndefinedTableError:  # not migrated yet: nothing is counted
            return 0, 0
        counted = await conn.fetch(
            """UPDATE tracking.run_sizes SET bytes = tracking.run_bytes(run_id)
               WHERE run_id = ANY($1) RETURNING bytes""",
            [row["run_id"] for row in past],
        )
    held = [row["bytes"] for row in counted if row["bytes"] > limit]
    return len(held), max(held, default=0)


# What a page of runs loads at most, counted in entries (params, tags, metric keys and
# inputs) beside paging.MAX_PAGE_LOAD_BYTES: each costs the service about 2 µs and 150
# bytes to decode, make into a run and convert, whatever its length, so a page of runs
# made of many tiny entries (a run may hold 120,000 one-word tags) is cut by its
# entries long before its bytes. 200,000 entries are about 0.4 s of work and 30 MiB.
MAX_PAGE_LOAD_ENTRIES = 200_000


async def loadable(conn: asyncpg.Connection, rows: list[asyncpg.Record], budget: int) -> int:
    """How many of the runs of rows (run_id), from the first, hold budget bytes together
    by their totals and MAX_PAGE_LOAD_ENTRIES entries together; one at least.

    The largest total of all runs (an index's last entry) answers at once (0.3 ms) when
    that many runs of that size fit both budgets (an entry counts ENTRY_BYTES at least):
    1,000 runs of 6 KiB each do. Only past that are the page's runs' totals read, a
    lookup each, and their entries counted in the primary keys' indexes, for the runs
    within the byte budget only: what is counted is bounded as what is loaded is.
    Within a transaction (a search page's), as fetch_planned plans the count."""
    if len(rows) <= 1:
        return len(rows)
    largest = await conn.fetchval("SELECT max(bytes) FROM tracking.run_sizes") or 0
    if largest * len(rows) <= budget and _most_entries(largest) * len(rows) <= (
        MAX_PAGE_LOAD_ENTRIES
    ):
        return len(rows)
    run_ids = [row["run_id"] for row in rows]
    held = await conn.fetch(_HELD, run_ids)
    within = _leading_within([row["bytes"] for row in held], budget)
    counted = {
        row["run_id"]: row["entries"]
        for row in await fetch_planned(conn, _ENTRIES, run_ids[:within])
    }
    entries = [counted.get(run_id, 0) for run_id in run_ids[:within]]
    return max(_leading_within(entries, MAX_PAGE_LOAD_ENTRIES), 1)


def _most_entries(held: int) -> int:
    """The most entries a run holding held bytes may have."""
    return held // ENTRY_BYTES


def _leading_within(amounts: list[int], budget: int) -> int:
    """How many of amounts, from the first, are within budget together."""
    return sum(1 for total in itertools.accumulate(amounts) if total <= budget)


# The totals of the runs $1, in that order (0 for a run without one).
_HELD = """SELECT coalesce(s.bytes, 0) AS bytes
FROM unnest($1::uuid[]) WITH ORDINALITY AS u(run_id, n)
LEFT JOIN tracking.run_sizes s ON s.run_id = u.run_id ORDER BY u.n"""

# The entries of each of the runs $1 that has any. The runs are given as values, not
# taken from a join: PostgreSQL plans a lookup by a run taken from a row for the rows a
# run holds on average, which one run of 100,000 tags among runs of none makes all of
# them, and then read the whole table once for each run (a page of 25 runs: 120 ms,
# not 6; of 200: 0.9 s). Given values, it looks each up in the table's statistics,
# where a run of many entries is counted for itself.
_ENTRIES = "SELECT run_id, count(*) AS entries FROM ({}) e GROUP BY run_id".format(
    " UNION ALL ".join(
        f"SELECT run_id FROM tracking.{table} WHERE run_id = ANY($1::uuid[])"
        for table in ["params", "tags", "latest_metrics", "run_inputs"]
    )
)


def _too_large(what: str, bound: int, metadata: dict[str, str] | None = None) -> InvalidArgument:
    return InvalidArgument(
        "RUN_TOO_LARGE",
        f"{what} may hold {bound} bytes of params, tags, metric keys and inputs (each "
        f"entry its strings in UTF-8 and {ENTRY_BYTES} more), and this write would pass "
        "that: delete tags, or log to another run",
        metadata={**(metadata or {}), "limit": str(bound)},
    )
