"""The operations table: creating, reading and listing operations, and the lease by
which one server at a time runs each; the servers table, of the servers seen running
them (docs/operations.md, "How it runs, and restarts")."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from ..common import validation
from ..common.errors import NotFound
from ..common.paging import Keyset, Page, SortColumn
from ..common.sql import Params
from .model import PREFIX, Kind, Lease, Operation, State

# Finished operations forgotten at a time: a short statement each.
SLICE_ROWS = 1000
_COLUMNS = """operation_id, kind, state, spec, steps, progress_done, progress_total, counts,
    errors, create_time, update_time, end_time, attempts, outages"""
_NEWEST_FIRST = Keyset(
    [
        SortColumn("create_time", False, "timestamptz", "create_time"),
        SortColumn("operation_id", False, "uuid", "operation_id"),
    ],
    "operations",
)


class LeaseLost(Exception):
    """Another server took the operation over (this one's lease had passed)."""


class OperationStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self,
        kind: Kind,
        spec: dict[str, Any],
        steps: Sequence[str],
        owner: uuid.UUID,
        lease: timedelta,
    ) -> Operation:
        """A new operation, PENDING and leased to owner, who is about to run it (its
        first attempt)."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"""INSERT INTO operations.operations
                        (operation_id, kind, state, spec, steps, owner, lease_until, attempts)
                    VALUES ($1, $2, $3, $4, $5, $6, clock_timestamp() + $7::interval, 1)
                    RETURNING {_COLUMNS}""",
                uuid.uuid4(),
                kind,
                State.PENDING,
                spec,
                list(steps),
                owner,
                lease,
            )
        return _operation(row)

    async def get(self, name: str) -> Operation:
        operation_id = operation_id_of(name)
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM operations.operations WHERE operation_id = $1",
                operation_id,
            )
        if row is None:
            raise not_found(name)
        return _operation(row)

    async def list(self, page_size: int, page_token: str) -> Page[Operation]:
        params = Params()
        after = _NEWEST_FIRST.condition(page_token, params)
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"""SELECT {_COLUMNS} FROM operations.operations WHERE {after}
                    ORDER BY create_time DESC, operation_id DESC
                    LIMIT {page_size + 1}""",
                *params.values,
            )
        return _NEWEST_FIRST.page(rows, page_size, _operation)

    async def claim(
        self,
        owner: uuid.UUID,
        hosted: Sequence[str],
        lease: timedelta,
        running: Sequence[uuid.UUID] = (),
    ) -> Operation | None:
        """Takes over one unfinished operation whose lease has passed and whose steps
        this server hosts all of, but none it is `running` still (its lease may pass
        while the attempt is under way); SKIP LOCKED, so two servers never take the same
        one. The attempt count grows, so the attempt taken over can change it no more.
        An attempt whose lease ran out without being handed back (its server died, or
        lost the database, which a rest also needs) counts as one an outage cut short."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """SELECT operation_id FROM operations.operations
                   WHERE end_time IS NULL AND lease_until < clock_timestamp()
                     AND steps <@ $1::text[] AND NOT operation_id = ANY($2::uuid[])
                   ORDER BY create_time LIMIT 1 FOR UPDATE SKIP LOCKED""",
                list(hosted),
                list(running),
            )
            if row is None:
                return None
            taken = await conn.fetchrow(
                f"""UPDATE operations.operations
                    SET owner = $2, lease_until = clock_timestamp() + $3::interval, state = $4,
                        attempts = attempts + 1, update_time = clock_timestamp(),
                        outages = outages + (owner IS NOT NULL)::int
                    WHERE operation_id = $1 RETURNING {_COLUMNS}""",
                row["operation_id"],
                owner,
                lease,
                State.RUNNING,
            )
        return _operation(taken)

    async def begin(self, held: Lease) -> None:
        """Marks an operation this server created RUNNING as it starts it."""
        await self._update(held, "state = $4", State.RUNNING)

    async def renew(self, held: Lease, lease: timedelta) -> None:
        await self._update(held, "lease_until = clock_timestamp() + $4::interval", lease)

    async def release(self, held: Lease) -> None:
        """Lets another server take the operation over at once (this one is stopping):
        PENDING, as no server runs it until one does."""
        await self._update(
            held, "owner = NULL, lease_until = clock_timestamp(), state = $4", State.PENDING
        )

    async def defer(self, held: Lease) -> None:
        """Hands back an operation this server created but has no slot to run yet, as
        if never begun: PENDING, for a server with a free slot to take over at once."""
        await self._update(
            held,
            """owner = NULL, lease_until = clock_timestamp(), state = $4,
               attempts = attempts - 1""",
            State.PENDING,
        )

    async def rest(self, held: Lease, delay: timedelta) -> None:
        """Hands back an attempt an outage cut short, counted: a server takes the
        operation over again (PENDING until then) once delay passed."""
        await self._update(
            held,
            """owner = NULL, lease_until = clock_timestamp() + $4::interval, state = $5,
               outages = outages + 1""",
            delay,
            State.PENDING,
        )

    async def plan(self, held: Lease, items: int, afresh: bool) -> None:
        """Adds items found to the total; afresh, to what is done (an attempt's first)."""
        await self._update(
            held,
            "progress_total = CASE WHEN $5 THEN progress_done ELSE progress_total END + $4",
            items,
            afresh,
        )

    async def count(self, held: Lease, kind: str, items: int, progress: int) -> None:
        """Adds items to the kind's count and progress to what is done, the total growing
        with it when a step does more than it planned (locations queued meanwhile).

        Items an attempt taken over since removed are counted all the same, unless the
        operation has ended by then: their removal committed, and the attempt that
        took over finds them gone (a frozen host's went uncounted). Its progress is not
        added, and it learns that it lost the operation (LeaseLost)."""
        progress_of_holder = "(CASE WHEN owner = $2 AND attempts = $3 THEN $6 ELSE 0 END)"
        async with self._pool.acquire() as conn:
            still_held = await conn.fetchval(
                f"""UPDATE operations.operations
                    SET counts = jsonb_set(counts, ARRAY[$4::text],
                            to_jsonb(coalesce((counts->>$4::text)::bigint, 0) + $5)),
                        progress_done = progress_done + {progress_of_holder},
                        progress_total = greatest(
                            progress_total, progress_done + {progress_of_holder}),
                        update_time = clock_timestamp()
                    WHERE operation_id = $1 AND end_time IS NULL
                    RETURNING owner IS NOT DISTINCT FROM $2 AND attempts = $3""",
                held.operation_id,
                held.owner,
                held.attempt,
                kind,
                items,
                progress,
            )
        if not still_held:
            raise LeaseLost(f"{PREFIX}{held.operation_id}")

    async def finish(self, held: Lease, state: State, errors: Sequence[str]) -> None:
        await self._update(
            held,
            f"""state = $4::smallint, errors = errors || $5::text[],
               end_time = clock_timestamp(), owner = NULL,
               progress_done = CASE WHEN $4::smallint = {int(State.SUCCEEDED)}
                   THEN progress_total ELSE progress_done END""",
            state,
            list(errors),
        )

    async def seen(self, server: uuid.UUID, hosted: Sequence[str], gap: timedelta) -> timedelta:
        """Records that server, running the steps hosted, reaches the database now;
        returns for how long it has without a gap longer than `gap` (an outage, or a
        server new or back after one, answers about 0)."""
        async with self._pool.acquire() as conn:
            return await conn.fetchval(
                """INSERT INTO operations.servers AS s (server_id, steps) VALUES ($1, $2)
                   ON CONFLICT (server_id) DO UPDATE
                   SET steps = excluded.steps, seen_at = excluded.seen_at,
                       up_since = CASE WHEN s.seen_at < excluded.seen_at - $3::interval
                           THEN excluded.up_since ELSE s.up_since END
                   RETURNING seen_at - up_since""",
                server,
                list(hosted),
                gap,
            )

    async def fail_abandoned(self, hosted: Sequence[str], older_than: timedelta) -> int:
        """Fails unfinished operations whose lease passed more than older_than ago,
        whose steps this server does not host all of, and that no server hosting them
        all was seen (`seen`) within older_than to take over. The caller makes sure it
        reached the database itself all that time: after an outage, no server was seen.
        Forgets the servers not seen in that time."""
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                """UPDATE operations.operations AS o
                   SET state = $3, end_time = clock_timestamp(), update_time = clock_timestamp(),
                       owner = NULL,
                       errors = errors || ('no server hosting ' || array_to_string(steps, ', ')
                           || ' was running to take the operation over')
                   WHERE end_time IS NULL AND lease_until < clock_timestamp() - $2::interval
                     AND NOT steps <@ $1::text[]
                     AND NOT EXISTS (
                         SELECT FROM operations.servers AS s
                         WHERE o.steps <@ s.steps
                           AND s.seen_at >= clock_timestamp() - $2::interval)""",
                list(hosted),
                older_than,
                State.FAILED,
            )
            await conn.execute(
                """DELETE FROM operations.servers
                   WHERE seen_at < clock_timestamp() - $1::interval""",
                older_than,
            )
        return int(status.split()[-1])

    async def forget_finished(
        self, before: datetime, kept_seconds: float, slice_rows: int = SLICE_ROWS
    ) -> int:
        """Deletes the operations that ended before `before` and more than kept_seconds
        ago, slice_rows at a time (each a short statement, which passes over rows
        another holds); returns how many."""
        forgotten = 0
        while True:
            async with self._pool.acquire() as conn:
                status = await conn.execute(
                    """DELETE FROM operations.operations WHERE ctid IN (
                           SELECT ctid FROM operations.operations
                           WHERE end_time < least($1, clock_timestamp() - $2 * interval '1 s')
                           LIMIT $3 FOR UPDATE SKIP LOCKED)""",
                    before,
                    kept_seconds,
                    slice_rows,
                )
            deleted = int(status.split()[-1])
            forgotten += deleted
            if deleted < slice_rows:
                return forgotten

    async def _update(self, held: Lease, assignments: str, *values: Any) -> None:
        """Changes an operation in the attempt `held` runs; LeaseLost when the operation
        was taken over since (by another server or, its lease passed, by this one)."""
        async with self._pool.acquire() as conn:
            changed = await conn.fetchval(
                f"""UPDATE operations.operations
                    SET {assignments}, update_time = clock_timestamp()
                    WHERE operation_id = $1 AND owner = $2 AND attempts = $3
                      AND end_time IS NULL
                    RETURNING true""",
                held.operation_id,
                held.owner,
                held.attempt,
                *values,
            )
        if not changed:
            raise LeaseLost(f"{PREFIX}{held.operation_id}")


def operation_id_of(name: str) -> uuid.UUID:
    """The id in "operations/<uuid>", the uuid as the service writes it (one operation
    would have many names: validation.uuid_as_written); NOT_FOUND for any other name."""
    text = name.removeprefix(PREFIX) if name.startswith(PREFIX) else ""
    operation_id = validation.uuid_as_written(text, hyphenated=True)
    if operation_id is None:
        raise not_found(name)
    return operation_id


def not_found(name: str) -> NotFound:
    return NotFound(
        "OPERATION_NOT_FOUND", f"no operation is named {name!r}", metadata={"name": name}
    )


def _operation(row: asyncpg.Record) -> Operation:
    return Operation(
        operation_id=row["operation_id"],
        kind=Kind(row["kind"]),
        state=State(row["state"]),
        spec=dict(row["spec"]),
        steps=list(row["steps"]),
        progress_done=row["progress_done"],
        progress_total=row["progress_total"],
        counts={k: int(v) for k, v in row["counts"].items()},
        errors=list(row["errors"]),
        create_time=row["create_time"],
        update_time=row["update_time"],
        end_time=row["end_time"],
        attempts=row["attempts"],
        outages=row["outages"],
    )
