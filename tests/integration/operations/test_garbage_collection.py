"""Garbage collection through the real services in-process: what was soft-deleted
before the cut-off goes for good, rows, names and bytes; nothing else is touched."""

from __future__ import annotations

import asyncio
import datetime
import math
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest

import cairn
from cairn._clients import operations as operations_client
from cairn.exceptions import InvalidArgumentError, NotFoundError, OperationTimeoutError
from cairn.operations.v1 import operations_service_pb2
from cairn.types import Operation, OperationState
from cairn_server.common.config import Config
from cairn_server.operations.model import Kind, Lease, State
from cairn_server.operations.store import OperationStore
from tests.conftest import new_project
from tests.proxy import StallingProxy

HOUR = datetime.timedelta(hours=1)


@pytest.fixture
async def client(server_port: int, unique: str) -> AsyncIterator[cairn.Client]:
    project = await new_project(server_port, f"gc-{unique}")
    async with cairn.Client(f"http://127.0.0.1:{server_port}", project=project) as client:
        yield client


async def _run_with_artifact(client: cairn.Client, experiment_id: str, tmp: Path) -> str:
    tracking = client.tracking
    run_id = (await tracking.create_run(experiment_id)).info.run_id
    await tracking.log_param(run_id, "lr", "0.1")
    for step in range(3):
        await tracking.log_metric(run_id, "loss", 1.0 / (step + 1), step=step)
    weights = tmp / f"weights-{run_id}.bin"
    weights.write_bytes(b"w" * 4096)
    await tracking.log_artifact(run_id, weights)
    return run_id


async def _storage_keys(pool: asyncpg.Pool, project: str) -> dict[str, str]:
    rows = await pool.fetch(
        "SELECT path, storage_key FROM artifacts.objects WHERE project = $1", project
    )
    return {row["path"]: row["storage_key"] for row in rows}


async def _deleted_long_ago(pool: asyncpg.Pool, table: str, ids: list[str]) -> None:
    """Moves the deletion two hours back, as if it had been made then."""
    column, sql_type = ("run_id", "uuid") if table == "runs" else ("experiment_id", "bigint")
    status = await pool.execute(
        f"""UPDATE tracking.{table} SET delete_time = delete_time - interval '2 hours'
            WHERE {column} = ANY($1::text[]::{sql_type}[])""",
        ids,
    )
    assert status == f"UPDATE {len(ids)}"


async def test_purges_what_was_deleted_before_the_cutoff(
    client: cairn.Client, pool: asyncpg.Pool, config: Config, tmp_path: Path, unique: str
) -> None:
    tracking, project = client.tracking, client.project
    doomed = await tracking.create_experiment(f"doomed-{unique}")
    doomed_runs = [await _run_with_artifact(client, doomed, tmp_path) for _ in range(2)]
    live = await tracking.create_experiment(f"live-{unique}")
    live_run = await _run_with_artifact(client, live, tmp_path)
    deleted_run = await _run_with_artifact(client, live, tmp_path)
    recent = await _run_with_artifact(client, live, tmp_path)  # deleted after the cut-off
    keys = await _storage_keys(pool, project)
    assert len(keys) == 5
    await tracking.delete_experiment(doomed)
    for run_id in (deleted_run, recent):
        await tracking.delete_run(run_id)
    await _deleted_long_ago(pool, "experiments", [doomed])
    await _deleted_long_ago(pool, "runs", [deleted_run])
    with pytest.raises(cairn.exceptions.AlreadyExistsError):
        await tracking.create_experiment(f"doomed-{unique}")  # the name is kept
    await pool.execute(
        """INSERT INTO tracking.requests (method, request_id, fingerprint, create_time)
           VALUES ('/x/Old', $1, '\\x00', clock_timestamp() - $2 * interval '1 second'),
                  ('/x/New', $1, '\\x00', clock_timestamp())""",
        f"gc-{unique}",
        config.request_id_retention_seconds + 60,
    )

    started = await client.operations.start_garbage_collection(HOUR)
    assert started.name.startswith("operations/")
    assert started.state in (OperationState.PENDING, OperationState.RUNNING)
    assert started.older_than == HOUR
    done = await client.operations.wait_operation(started.name, timeout=60)

    assert done.state is OperationState.SUCCEEDED, done.errors
    assert done.counts["runs"] >= 3 and done.counts["experiments"] >= 1
    assert done.counts["artifact_objects"] >= 3
    assert done.counts["artifact_bytes"] >= 3 * 4096
    assert done.counts["request_ids"] >= 1
    assert done.progress_done == done.progress_total >= 4
    assert done.end_time is not None and done.create_time is not None
    assert done.end_time >= done.create_time
    for run_id in (*doomed_runs, deleted_run):
        with pytest.raises(NotFoundError):
            await tracking.get_run(run_id)
    with pytest.raises(NotFoundError):
        await tracking.get_experiment(doomed)
    assert await tracking.create_experiment(f"doomed-{unique}")  # the name is free
    assert (await tracking.get_run(live_run)).info.lifecycle_stage == "active"
    assert (await tracking.get_run(recent)).info.lifecycle_stage == "deleted"
    assert (await tracking.get_experiment(live)).lifecycle_stage == "active"

    left = await _storage_keys(pool, project)
    assert len(left) == 2  # those of the live run and of the run deleted after the cut-off
    root = config.artifact_dir
    for path, key in keys.items():
        assert (root / key).exists() == (path in left), path
    methods = {
        row["method"]
        for row in await pool.fetch(
            "SELECT method FROM tracking.requests WHERE request_id = $1", f"gc-{unique}"
        )
    }
    assert methods == {"/x/New"}

    listed = [op.name async for op in client.operations.list_operations(page_size=1).limit(50)]
    assert started.name in listed
    assert (await client.operations.get_operation(started.name)) == done


async def test_forgets_the_operations_that_ended_before_the_cutoff(
    client: cairn.Client, pool: asyncpg.Pool
) -> None:
    """One row a collection was kept for ever. One that ended within the request ids'
    retention stays, whatever the cutoff: a client may still wait on it."""
    operations = client.operations
    old, recent = [
        await operations.wait_operation(
            (await operations.start_garbage_collection(HOUR)).name, timeout=60
        )
        for _ in range(2)
    ]
    status = await pool.execute(
        """UPDATE operations.operations SET end_time = end_time - interval '2 hours'
           WHERE operation_id = $1""",
        uuid.UUID(old.name.removeprefix("operations/")),
    )
    assert status == "UPDATE 1"
    everything = datetime.timedelta(0)
    done = await operations.wait_operation(
        (await operations.start_garbage_collection(everything)).name, timeout=60
    )
    assert done.state is OperationState.SUCCEEDED and done.counts["operations"] >= 1
    with pytest.raises(NotFoundError):
        await operations.get_operation(old.name)
    assert (await operations.get_operation(recent.name)) == recent


async def test_a_wait_that_times_out_says_so(client: cairn.Client, pool: asyncpg.Pool) -> None:
    experiment_id = await client.tracking.create_experiment("held")
    await client.tracking.delete_experiment(experiment_id)
    await _deleted_long_ago(pool, "experiments", [experiment_id])
    # A transaction of the test holds the experiments table: the collection waits.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE tracking.experiments IN ACCESS EXCLUSIVE MODE")
        started = await client.operations.start_garbage_collection(HOUR)
        seen: list[Operation] = []
        with pytest.raises(OperationTimeoutError) as timed_out:
            await client.operations.wait_operation(
                started.name, timeout=0.5, on_progress=seen.append
            )
        assert not timed_out.value.operation.done
        assert seen and seen[-1] == timed_out.value.operation
    done = await client.operations.wait_job_completion(started.name, max_wait_timeout=60)
    assert done.state is OperationState.SUCCEEDED
    assert done.counts["experiments"] >= 1
    with pytest.raises(NotFoundError):
        await client.tracking.get_experiment(experiment_id)


async def test_a_wait_reporting_every_0_seconds_asks_ten_times_a_second_at_most(
    client: cairn.Client, pool: asyncpg.Pool
) -> None:
    """report_every=0 asked the server again and again without pause."""
    store, server = OperationStore(pool), uuid.uuid4()
    # Of a step no server hosts: it stays pending while the wait goes on.
    operation = await store.create(Kind.GARBAGE_COLLECTION, {}, ["wait-test"], server, HOUR)
    reports: list[object] = []
    try:
        # Without a timeout of its own (whose remainder bounded each call's wait where
        # report_every was NaN), stopped from outside after half a second.
        for report_every in (0.0, float("nan")):
            reports.clear()
            waiting = client.operations.wait_operation(
                operation.name, on_progress=reports.append, report_every=report_every
            )
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(waiting, 0.5)
            assert 1 <= len(reports) <= 7
    finally:
        await store.finish(
            Lease(operation.operation_id, server, operation.attempts), State.FAILED, []
        )


async def test_a_wait_of_a_nan_timeout_is_refused(client: cairn.Client, pool: asyncpg.Pool) -> None:
    """A deadline of NaN is never reached, and each call's wait was cut to nothing: the
    wait asked the server some 1,100 times a second, for ever."""
    store, server = OperationStore(pool), uuid.uuid4()
    operation = await store.create(Kind.GARBAGE_COLLECTION, {}, ["wait-test"], server, HOUR)
    try:
        with pytest.raises(ValueError, match="timeout"):
            await asyncio.wait_for(client.operations.wait_operation(operation.name, math.nan), 5)
        with pytest.raises(ValueError, match="timeout"):
            waiting = client.operations.wait_job_completion(operation.name, math.nan)  # type: ignore[arg-type]
            await asyncio.wait_for(waiting, 5)
    finally:
        await store.finish(
            Lease(operation.operation_id, server, operation.attempts), State.FAILED, []
        )


async def test_bad_requests_say_why(client: cairn.Client) -> None:
    with pytest.raises(InvalidArgumentError) as negative:
        await client.operations.start_garbage_collection(datetime.timedelta(seconds=-1))
    assert negative.value.reason == "INVALID_ARGUMENT"
    assert negative.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(InvalidArgumentError) as unset:
        operations = client.operations
        await operations._transport.unary(
            operations._stub.StartGarbageCollection,
            operations_service_pb2.StartGarbageCollectionRequest(),  # no older_than
        )
    assert unset.value.reason == "INVALID_ARGUMENT"
    for name in ("operations/00000000-0000-0000-0000-000000000000", "nonsense", ""):
        with pytest.raises(NotFoundError) as unknown:
            await client.operations.get_operation(name)
        assert unknown.value.reason == "OPERATION_NOT_FOUND"
        with pytest.raises(NotFoundError):
            await client.operations.wait_operation(name, timeout=1)
    with pytest.raises(InvalidArgumentError) as token:
        await client.operations.get_operations(cairn.types.ListOptions(next_page_token="x"))
    assert token.value.reason == "INVALID_PAGE_TOKEN"


async def test_an_operation_has_one_name(client: cairn.Client) -> None:
    """uuid.UUID reads an id in other spellings too: each was another name of the
    operation."""
    started = await client.operations.start_garbage_collection(datetime.timedelta(days=3650))
    assert (await client.operations.get_operation(started.name)).name == started.name
    operation_id = started.name.removeprefix("operations/")
    for other in (f"urn:uuid:{operation_id}", operation_id.upper(), operation_id.replace("-", "")):
        with pytest.raises(NotFoundError):
            await client.operations.get_operation(f"operations/{other}")
    await client.operations.wait_operation(started.name, timeout=30)


@pytest.mark.parametrize("bad", ["2", 1.5, True, 0])
async def test_a_page_size_of_list_operations_that_is_no_page_size_is_named_so(
    client: cairn.Client, bad: object
) -> None:
    """It was refused naming `limit`, which the caller never wrote."""
    with pytest.raises(InvalidArgumentError) as refused:
        [op async for op in client.operations.list_operations(page_size=bad)]  # type: ignore[arg-type]
    assert refused.value.field_violations[0][0] == "page_size"


@pytest.mark.parametrize("timeout", [2.0, None])
async def test_a_wait_goes_on_while_the_server_stops_answering(
    server_port: int, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, timeout: float | None
) -> None:
    """A server that stopped answering (a partition, a frozen host) ended every wait
    with the DeadlineExceededError of its call, 10 s past the wait's own timeout, and a
    wait of no timeout too; it is out of reach, as one that refuses connections is."""
    monkeypatch.setattr(operations_client, "_DEADLINE_MARGIN_SECONDS", 0.5)
    store, server = OperationStore(pool), uuid.uuid4()
    operation = await store.create(Kind.GARBAGE_COLLECTION, {}, ["wait-test"], server, HOUR)
    proxy = StallingProxy("127.0.0.1", server_port)
    port = await proxy.start()
    reports: list[Operation] = []

    def stall_after_the_first(report: Operation) -> None:
        reports.append(report)
        proxy.stall()

    try:
        async with cairn.OperationsClient.insecure_connection("127.0.0.1", port) as client:
            waiting = asyncio.ensure_future(
                client.wait_operation(
                    operation.name, timeout, stall_after_the_first, report_every=0.2
                )
            )
            started = asyncio.get_running_loop().time()
            if timeout is None:  # still waiting, asking again
                await asyncio.wait({waiting}, timeout=4.0)
                assert not waiting.done()
                waiting.cancel()
            else:
                with pytest.raises(OperationTimeoutError) as timed_out:
                    await waiting
                took = asyncio.get_running_loop().time() - started
                assert took < timeout + 2 * operations_client._LAST_CALL_MARGIN_SECONDS
                assert timed_out.value.operation == reports[0]
    finally:
        await proxy.close()
        await store.finish(
            Lease(operation.operation_id, server, operation.attempts), State.FAILED, []
        )
