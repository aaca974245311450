"""Operations through a long database outage and under load: an operation no server
could take over while the database was away is taken over once it answers, not failed;
one server runs a bounded number of operations at once, the others waiting PENDING."""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from cairn_server import catalog
from cairn_server.common import database
from cairn_server.common.config import Config
from cairn_server.common.idempotency import Idempotency
from cairn_server.common.server import migrate
from cairn_server.common.service import Resources
from cairn_server.operations import runner
from cairn_server.operations.model import DONE, Kind, Lease, Operation, State
from cairn_server.operations.store import OperationStore
from tests.conftest import eventually, serving

GAP = datetime.timedelta(seconds=10)
OUTAGE = datetime.timedelta(minutes=11)  # longer than runner.ABANDONED_AFTER
SPEC = {"older_than_seconds": 3600.0}


@pytest.fixture
async def pool(own_postgres, config: Config) -> AsyncIterator[asyncpg.Pool]:
    """A database of the module's own: no other test's server takes these operations
    over, or is seen hosting their steps."""
    pool = await database.create_pool(own_postgres.get_uri(), config)
    await migrate(pool, catalog.select([]))
    yield pool
    await database.close_pool(pool)


async def _rows(pool: asyncpg.Pool, operations: list[Operation]) -> list[asyncpg.Record]:
    return await pool.fetch(
        """SELECT state, owner, attempts, outages, errors FROM operations.operations
           WHERE operation_id = ANY($1::uuid[]) ORDER BY create_time""",
        [operation.operation_id for operation in operations],
    )


async def test_operations_a_long_outage_left_are_taken_over_not_failed(
    config: Config, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Services deployed apart, the database away for 11 minutes: no server could take
    over the operations whose lease passed meanwhile. Once it answers, the server that
    cannot run them looks first (it failed them all then, saying their server had
    stopped); the server hosting their steps takes each over, and none fails."""
    store = OperationStore(pool)
    left = [
        await store.create(Kind.GARBAGE_COLLECTION, SPEC, ["tracking"], uuid.uuid4(), -OUTAGE)
        for _ in range(6)
    ]
    passes: list[list[str]] = []  # the steps of each server's claims, as each passes
    claim = OperationStore.claim

    async def noted(self: OperationStore, *args: Any, **kwargs: Any) -> Operation | None:
        passes.append(list(args[1]))
        return await claim(self, *args, **kwargs)

    monkeypatch.setattr(OperationStore, "claim", noted)
    async with serving(config, pool, ["registry"]):
        await eventually(lambda: [] in passes, what="the registry server's first pass")
        async with serving(config, pool, ["tracking"]):

            async def ended() -> bool:
                return all(row["state"] in DONE for row in await _rows(pool, left))

            await eventually(ended, timeout=30, what="the operations to end")
    rows = await _rows(pool, left)
    assert [(row["state"], row["errors"]) for row in rows] == [(State.SUCCEEDED, [])] * 6
    assert {row["attempts"] for row in rows} == {2}


async def test_a_server_back_from_an_outage_is_seen_anew(pool: asyncpg.Pool) -> None:
    """A server's time seen runs while its passes come no more than a gap apart: one
    that lost the database (no pass for 11 minutes) starts again from 0, so it waits
    the whole window again before it fails an operation as abandoned."""
    store, server = OperationStore(pool), uuid.uuid4()
    assert await store.seen(server, ["tracking"], GAP) < GAP
    await pool.execute(
        """UPDATE operations.servers SET up_since = up_since - interval '30 minutes',
               seen_at = seen_at - interval '1 second' WHERE server_id = $1""",
        server,
    )
    assert await store.seen(server, ["tracking"], GAP) >= datetime.timedelta(minutes=30)
    await pool.execute(
        "UPDATE operations.servers SET seen_at = seen_at - $2::interval WHERE server_id = $1",
        server,
        OUTAGE,
    )
    assert await store.seen(server, ["tracking"], GAP) < GAP


async def test_an_operation_is_failed_only_once_no_server_able_to_run_it_is_seen(
    pool: asyncpg.Pool,
) -> None:
    """Its lease long passed, an operation waits while a server hosting its steps is
    seen (busy with others, say); once that server has not been seen for the window,
    a server that cannot run it fails it, saying why."""
    store, hosting = OperationStore(pool), uuid.uuid4()
    steps = [f"seen-test-{uuid.uuid4()}"]
    operation = await store.create(Kind.GARBAGE_COLLECTION, SPEC, steps, uuid.uuid4(), -OUTAGE)
    await store.seen(hosting, steps, GAP)
    await store.fail_abandoned(["tracking"], runner.ABANDONED_AFTER)
    assert (await store.get(operation.name)).state is State.PENDING
    await pool.execute(
        "UPDATE operations.servers SET seen_at = seen_at - $2::interval WHERE server_id = $1",
        hosting,
        OUTAGE,
    )
    assert await store.fail_abandoned(["tracking"], runner.ABANDONED_AFTER) >= 1
    failed = await store.get(operation.name)
    assert failed.state is State.FAILED
    assert failed.errors == [f"no server hosting {steps[0]} was running to take the operation over"]


async def test_a_server_that_cannot_record_itself_still_takes_operations_over(
    config: Config, pool: asyncpg.Pool
) -> None:
    """Recording a server as seen only decides what it may fail as abandoned: with the
    servers table locked, its passes waited on the lock and took nothing over, not even
    the operations it had handed back for want of a slot."""
    store = OperationStore(pool)
    left = await store.create(Kind.GARBAGE_COLLECTION, SPEC, ["tracking"], uuid.uuid4(), -GAP)
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute("LOCK TABLE operations.servers IN ACCESS EXCLUSIVE MODE")
        async with serving(config, pool, ["tracking"]):

            async def ended() -> bool:
                return (await store.get(left.name)).state is State.SUCCEEDED

            await eventually(ended, timeout=30, what="the operation taken over and run")


async def test_a_server_runs_a_bounded_number_of_operations_at_once(
    config: Config, pool: asyncpg.Pool
) -> None:
    """Started at once, three times as many collections as a server has slots: it runs
    as many as it has slots, the others wait PENDING and unowned (any server with a
    free slot may take them), and all end SUCCEEDED, each begun once. Unbounded, 1000
    ran at once on one server, and calls waited for the pool."""
    cap = runner.MAX_RUNNING
    resources = Resources(config=config, pool=pool, idempotency=Idempotency(pool, {}, set()))
    server = runner.Runner(resources, catalog.select(["tracking"]))
    running, most, gate = 0, 0, asyncio.Event()
    collect = server._collect

    async def counted(operation: Operation, held: Lease) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await gate.wait()
            await collect(operation, held)
        finally:
            running -= 1

    server._collect = counted  # type: ignore[method-assign]
    serving_task = asyncio.create_task(server.serve())
    try:
        older_than = datetime.timedelta(days=3650)
        started = await asyncio.gather(
            *(server.start_garbage_collection(older_than) for _ in range(3 * cap))
        )
        await eventually(lambda: running >= cap, what="the first collections to run")
        waiting = [(row["state"], row["owner"]) for row in await _rows(pool, started)]
        assert sorted(waiting) == sorted(
            [(State.RUNNING, server._owner)] * cap + [(State.PENDING, None)] * (2 * cap)
        )
        gate.set()

        async def ended() -> bool:
            return all(row["state"] in DONE for row in await _rows(pool, started))

        await eventually(ended, timeout=30, what="the collections to end")
    finally:
        serving_task.cancel()
        await asyncio.gather(serving_task, return_exceptions=True)
    rows = await _rows(pool, started)
    assert [(row["state"], row["attempts"], row["outages"]) for row in rows] == [
        (State.SUCCEEDED, 1, 0)
    ] * (3 * cap)
    assert most == cap


async def test_a_start_handed_back_as_a_claim_looks_is_taken_at_once(
    config: Config, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slot freed, the server's claim took it and looked before a start, deferred for
    want of that slot, was handed back; the claim found nothing and ended, and the
    start waited for the next pass (CLAIM_SECONDS, an hour here) with the slot free."""
    monkeypatch.setattr(runner, "CLAIM_SECONDS", 3600.0)  # only a freed slot wakes it
    resources = Resources(config=config, pool=pool, idempotency=Idempotency(pool, {}, set()))
    server = runner.Runner(resources, catalog.select(["tracking"]))
    gates: dict[uuid.UUID, asyncio.Event] = {}  # the first two, until their slot frees
    collect, claim, defer = server._collect, OperationStore.claim, OperationStore.defer
    claiming, deferring, claimed = asyncio.Event(), asyncio.Event(), asyncio.Event()
    idle, armed = asyncio.Event(), False  # its first pass done; the claim to come watched

    async def gated(operation: Operation, held: Lease) -> None:
        if not armed:
            await gates.setdefault(operation.operation_id, asyncio.Event()).wait()
        await collect(operation, held)

    async def claim_then(self: OperationStore, *args: Any, **kwargs: Any) -> Operation | None:
        if not armed:
            try:
                return await claim(self, *args, **kwargs)
            finally:
                idle.set()
        claiming.set()
        await deferring.wait()
        try:
            return await claim(self, *args, **kwargs)  # before the hand-back commits
        finally:
            claimed.set()

    async def defer_after(self: OperationStore, lease: Lease) -> None:
        if armed:
            deferring.set()
            await claimed.wait()
        await defer(self, lease)

    server._collect = gated  # type: ignore[method-assign]
    monkeypatch.setattr(OperationStore, "claim", claim_then)
    monkeypatch.setattr(OperationStore, "defer", defer_after)
    older_than = datetime.timedelta(days=3650)
    serving_task = asyncio.create_task(server.serve())
    try:
        await idle.wait()  # its pass at start: both slots free for the first two
        first = await server.start_garbage_collection(older_than)
        await server.start_garbage_collection(older_than)
        await eventually(lambda: len(gates) == 2, what="both slots taken")
        armed = True
        gates[first.operation_id].set()  # a slot frees: the loop's claim takes it
        await asyncio.wait_for(claiming.wait(), 30)
        third = await server.start_garbage_collection(older_than)
        store = OperationStore(pool)

        async def ran() -> bool:
            return (await store.get(third.name)).state is State.SUCCEEDED

        await eventually(ran, timeout=20, what="the start handed back taken over")
    finally:
        for event in gates.values():
            event.set()
        serving_task.cancel()
        await asyncio.gather(serving_task, return_exceptions=True)


async def test_a_takeovers_total_is_what_was_done_and_what_is_left(pool: asyncpg.Pool) -> None:
    """The steps of a takeover find only what the attempts before left: adding what
    they find to the total counted the work done twice, and progress went backwards."""
    store, first, second = OperationStore(pool), uuid.uuid4(), uuid.uuid4()
    steps = [f"total-test-{uuid.uuid4()}"]
    operation = await store.create(Kind.GARBAGE_COLLECTION, SPEC, steps, first, -GAP)
    gc = runner.GarbageCollection(store, operation, Lease(operation.operation_id, first, 1))
    await gc.plan(10)
    await gc.done("runs", 4)  # then its server died
    taken = await store.claim(second, steps, GAP)
    assert taken is not None and taken.operation_id == operation.operation_id
    again = runner.GarbageCollection(store, taken, Lease(taken.operation_id, second, 2))
    await again.plan(6)
    await again.plan(0)
    found = await store.get(operation.name)
    assert (found.progress_done, found.progress_total) == (4, 10)


async def test_a_step_that_does_more_than_it_planned_grows_the_total(
    pool: asyncpg.Pool,
) -> None:
    """The artifacts step plans the locations queued as it begins and drains the queue
    to its end, those queued meanwhile too (by a tracking step running apart): done
    read 600 of 300, then fell back to 300 as the collection ended."""
    store, owner = OperationStore(pool), uuid.uuid4()
    operation = await store.create(Kind.GARBAGE_COLLECTION, SPEC, ["total-test"], owner, GAP)
    gc = runner.GarbageCollection(store, operation, Lease(operation.operation_id, owner, 1))
    await gc.plan(3)
    await gc.done("artifact_locations", 5)
    running = await store.get(operation.name)
    assert (running.progress_done, running.progress_total) == (5, 5)
    await gc.plan(2)  # a later step's
    await gc.done("runs", 2)
    await store.finish(Lease(operation.operation_id, owner, 1), State.SUCCEEDED, [])
    ended = await store.get(operation.name)
    assert (ended.progress_done, ended.progress_total) == (7, 7)


def test_retry_delays_are_lengthened_by_up_to_a_quarter() -> None:
    delays = [runner._jittered(datetime.timedelta(seconds=100)) for _ in range(100)]
    low, high = datetime.timedelta(seconds=100), datetime.timedelta(seconds=125)
    assert all(low <= delay <= high for delay in delays)
    assert len(set(delays)) > 1
