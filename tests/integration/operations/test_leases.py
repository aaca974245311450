"""The lease of an operation: among servers asking at once, one takes it over; a server
that lost it can change it no more; one nobody can run is failed with the reason."""

from __future__ import annotations

import asyncio
import datetime
import uuid

import asyncpg
import pytest

from cairn_server.operations.model import Kind, Lease, State
from cairn_server.operations.store import LeaseLost, OperationStore

# No server hosts this step, so the test servers' own runners leave these alone.
STEPS = ["leases-test"]
EXPIRED = datetime.timedelta(0)
LEASE = datetime.timedelta(seconds=30)


async def test_one_of_many_servers_takes_an_expired_operation(pool: asyncpg.Pool) -> None:
    store = OperationStore(pool)
    gone = uuid.uuid4()
    operation = await store.create(Kind.GARBAGE_COLLECTION, {}, STEPS, gone, EXPIRED)
    servers = [uuid.uuid4() for _ in range(8)]
    taken = await asyncio.gather(*(store.claim(s, STEPS, LEASE) for s in servers))
    mine = [t for t in taken if t is not None and t.operation_id == operation.operation_id]
    assert len(mine) == 1 and mine[0].state is State.RUNNING
    winner = Lease(operation.operation_id, servers[taken.index(mine[0])], mine[0].attempts)
    assert (operation.attempts, winner.attempt) == (1, 2)
    with pytest.raises(LeaseLost):  # the server whose lease passed is out
        await store.count(Lease(operation.operation_id, gone, 1), "runs", 1, 1)
    await store.count(winner, "runs", 2, 2)
    await store.finish(winner, State.SUCCEEDED, [])
    done = await store.get(operation.name)
    assert done.state is State.SUCCEEDED and done.counts == {"runs": 2}
    again = await store.claim(uuid.uuid4(), STEPS, LEASE)  # a done operation stays done
    assert again is None or again.operation_id != operation.operation_id


async def test_an_operation_no_server_can_run_is_failed_with_the_reason(
    pool: asyncpg.Pool,
) -> None:
    store = OperationStore(pool)
    operation = await store.create(Kind.GARBAGE_COLLECTION, {}, STEPS, uuid.uuid4(), EXPIRED)
    # A server without the step does not take it, and fails it once long abandoned.
    taken = await store.claim(uuid.uuid4(), ["tracking"], LEASE)
    assert taken is None or taken.operation_id != operation.operation_id
    assert await store.fail_abandoned(["tracking"], EXPIRED) >= 1
    failed = await store.get(operation.name)
    assert failed.state is State.FAILED and failed.end_time is not None
    assert failed.errors == [
        "no server hosting leases-test took the operation over after its server stopped"
    ]


async def test_an_attempt_taken_over_by_its_own_server_can_change_it_no_more(
    pool: asyncpg.Pool,
) -> None:
    """A server whose lease passed while it still ran the operation, and that took it
    over itself: the first attempt is fenced off by the attempt number, not the owner."""
    store = OperationStore(pool)
    server, steps = uuid.uuid4(), [f"fence-test-{uuid.uuid4()}"]  # this operation alone
    operation = await store.create(Kind.GARBAGE_COLLECTION, {}, steps, server, EXPIRED)
    first = Lease(operation.operation_id, server, operation.attempts)
    # It runs the operation still: it does not take over what it runs.
    assert await store.claim(server, steps, LEASE, running=[operation.operation_id]) is None
    again = await store.claim(server, steps, LEASE)
    assert again is not None and again.operation_id == operation.operation_id
    with pytest.raises(LeaseLost):
        await store.count(first, "runs", 1, 1)
    await store.count(Lease(operation.operation_id, server, again.attempts), "runs", 2, 2)
    assert (await store.get(operation.name)).counts == {"runs": 2}
