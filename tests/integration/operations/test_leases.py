"""The lease of an operation: among servers asking at once, one takes it over; a server
that lost it can change it no more; one nobody can run is failed with the reason."""

from __future__ import annotations

import asyncio
import datetime
import uuid
from typing import Any

import asyncpg
import pytest
from google.protobuf.message import Message

from cairn._headers import REQUEST_ID_HEADER
from cairn.tracking.v1 import tracking_service_pb2
from cairn_server import catalog
from cairn_server.common.access import Caller, set_caller
from cairn_server.common.config import Config
from cairn_server.common.idempotency import Idempotency, after_commit
from cairn_server.common.service import Resources
from cairn_server.operations.model import Kind, Lease, Operation, State
from cairn_server.operations.runner import Runner
from cairn_server.operations.store import LeaseLost, OperationStore
from tests.conftest import eventually

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
    assert done.state is State.SUCCEEDED
    assert (done.counts, done.progress_done) == ({"runs": 3}, 2)  # what each removed
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
    assert failed.errors == ["no server hosting leases-test was running to take the operation over"]


async def test_an_attempt_taken_over_by_its_own_server_can_change_it_no_more(
    pool: asyncpg.Pool,
) -> None:
    """A server whose lease passed while it still ran the operation, and that took it
    over itself: the first attempt is fenced off by the attempt number, not the owner.
    What it removed is counted all the same (the attempt after it finds it gone), not
    its progress: before, its count was dropped, and a frozen host's removals went
    uncounted."""
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
    counted = await store.get(operation.name)
    assert (counted.counts, counted.progress_done) == ({"runs": 3}, 2)


class _Call:
    """Stands in for a grpc.aio.ServicerContext: the headers of a call with a request id."""

    def __init__(self, request_id: str) -> None:
        self.headers = ((REQUEST_ID_HEADER, request_id),)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.headers


async def test_an_operation_stored_as_its_caller_gives_up_is_launched(
    config: Config, pool: asyncpg.Pool
) -> None:
    """A caller's deadline could cancel a start between the operation's commit and its
    launch: stored but never started, it waited for its lease to pass, then was taken
    over as an attempt an outage cut short (attempts 2, outages 1)."""
    resources = Resources(config=config, pool=pool, idempotency=Idempotency(pool, {}, set()))
    runner = Runner(resources, catalog.select(["tracking"]))
    created, release = asyncio.Event(), asyncio.Event()
    create = runner._store.create

    async def create_then_wait(*args: Any) -> Operation:
        operation = await create(*args)
        created.set()
        await release.wait()  # where the caller's cancellation lands: after the commit
        return operation

    runner._store.create = create_then_wait  # type: ignore[method-assign,assignment]
    start = asyncio.create_task(runner.start_garbage_collection(datetime.timedelta(days=3650)))
    await created.wait()
    start.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await start
    await eventually(lambda: bool(runner._running), what="the operation launched")
    ((operation_id, task),) = runner._running.items()
    await task
    row = await pool.fetchrow(
        "SELECT state, attempts, outages FROM operations.operations WHERE operation_id = $1",
        operation_id,
    )
    assert (row["state"], row["attempts"], row["outages"]) == (State.SUCCEEDED, 1, 0)


@pytest.mark.parametrize("hand_back", ["release", "rest"])
async def test_an_operation_handed_back_reads_pending(pool: asyncpg.Pool, hand_back: str) -> None:
    """Handed back by a stopping server (release) or to rest after an outage, an
    operation has no server running it until one takes it over: it read RUNNING
    meanwhile, through a lone server's restart or up to five minutes of retry delay."""
    store = OperationStore(pool)
    owner = uuid.uuid4()
    operation = await store.create(Kind.GARBAGE_COLLECTION, {}, STEPS, owner, LEASE)
    held = Lease(operation.operation_id, owner, operation.attempts)
    await store.begin(held)
    assert (await store.get(operation.name)).state is State.RUNNING
    if hand_back == "release":
        await store.release(held)
    else:
        await store.rest(held, LEASE)
    assert (await store.get(operation.name)).state is State.PENDING


async def test_an_operation_stored_as_its_server_stops_is_handed_back(
    config: Config, pool: asyncpg.Pool
) -> None:
    """A start under way as its server stops commits in the drain, after the server
    handed its operations back: launched then, it ran until the pool closed under it,
    was left to its lease, and its takeover counted as an outage. It is handed back
    too, PENDING, for another server to take over at once."""
    resources = Resources(config=config, pool=pool, idempotency=Idempotency(pool, {}, set()))
    runner = Runner(resources, catalog.select(["tracking"]))
    runner.steps = STEPS  # stored with steps no server runs, none takes it meanwhile
    created, release = asyncio.Event(), asyncio.Event()
    create = runner._store.create

    async def create_then_wait(*args: Any) -> Operation:
        operation = await create(*args)
        created.set()
        await release.wait()  # the server stops before the start ends
        return operation

    runner._store.create = create_then_wait  # type: ignore[method-assign,assignment]
    serving = asyncio.create_task(runner.serve())
    start = asyncio.create_task(runner.start_garbage_collection(datetime.timedelta(days=3650)))
    await created.wait()
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    release.set()
    operation = await start
    launched = list(runner._running.values())
    for task in launched:
        task.cancel()
    row = await pool.fetchrow(
        "SELECT state, owner, lease_until <= now() AS passed, attempts, outages "
        "FROM operations.operations WHERE operation_id = $1",
        operation.operation_id,
    )
    assert not launched
    assert dict(row) == {
        "state": State.PENDING,
        "owner": None,
        "passed": True,
        "attempts": 1,
        "outages": 0,
    }


async def test_an_operation_launched_as_its_server_stops_is_handed_back(
    config: Config, pool: asyncpg.Pool
) -> None:
    """Launched in the loop's pass that stops the runner, its task is cancelled before
    its first step, which runs nothing of it: no hand-back, and the operation was left
    to its lease, its takeover counted as an outage."""
    resources = Resources(config=config, pool=pool, idempotency=Idempotency(pool, {}, set()))
    runner = Runner(resources, catalog.select(["tracking"]))
    runner._purging = []  # were it run after all, it collects nothing
    spec = {"older_than_seconds": datetime.timedelta(days=3650).total_seconds()}
    operation = await runner._store.create(
        Kind.GARBAGE_COLLECTION, spec, STEPS, runner._owner, LEASE
    )
    looked, take_over = asyncio.Event(), runner._take_over

    async def look_then_say() -> None:
        await take_over()
        looked.set()

    runner._take_over = look_then_say  # type: ignore[method-assign]
    serving = asyncio.create_task(runner.serve())
    await looked.wait()  # serve() waits for its next look
    serving.cancel()  # its end comes first in the next pass
    runner._launch(operation)
    with pytest.raises(asyncio.CancelledError):
        await serving
    row = await pool.fetchrow(
        "SELECT state, owner FROM operations.operations WHERE operation_id = $1",
        operation.operation_id,
    )
    assert dict(row) == {"state": State.PENDING, "owner": None}


async def test_what_a_committed_write_left_for_after_its_commit_runs_if_its_caller_gives_up(
    pool: asyncpg.Pool, unique: str
) -> None:
    """A write run once per request id commits, then runs what it left for after its
    commit (launching an operation, forgetting a revoked key's cached grant): a caller
    giving up then cut those short, an operation stored waited unlaunched."""
    once = Idempotency(pool, {"cairn.tracking.v1.TrackingService": "tracking"}, exempt=set())
    began, release, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def left_for_after() -> None:
        began.set()
        await release.wait()  # where the caller's cancellation lands
        finished.set()

    async def handler() -> Message:
        await after_commit(left_for_after)
        return tracking_service_pb2.CreateExperimentResponse()

    request = tracking_service_pb2.CreateExperimentRequest(name=f"gives-up-{unique}")
    set_caller(Caller(user_id="", global_admin=True))  # as the interceptor does, auth off
    call = asyncio.create_task(
        once.run(
            "tracking",
            "/cairn.tracking.v1.TrackingService/CreateExperiment",
            _Call(f"gives-up-{unique}"),
            request,
            handler,
        )
    )
    await eventually(lambda: began.is_set() or call.done(), what="the write committed")
    assert not call.done(), call.exception()  # so the write, then the action, began
    call.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await call
    await eventually(finished.is_set, what="the action left for after the commit to end")
