"""Metric-history readers cannot hold the database: a stream whose client stops taking
messages is ended (STREAM_STALLED), and history streams take at most half the pool's
connections, so a client that stalls them cannot make the process UNAVAILABLE."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import grpc
import pytest

import cairn
from cairn import sync
from cairn.exceptions import CairnError, ResourceExhaustedError, UnavailableError, from_grpc_error
from cairn.tracking.v1 import tracking_pb2 as pb
from cairn.tracking.v1 import tracking_service_pb2 as api
from cairn.tracking.v1 import tracking_service_pb2_grpc as rpc
from cairn_server.common import database
from cairn_server.common.config import Config
from cairn_server.tracking.store.history import CHUNK_POINTS
from tests.conftest import eventually, serving, with_overrides

# A history far larger than what the transport buffers hold between server and client
# (flow-control windows and socket buffers), so that a server writing to a client that
# stopped reading waits on it.
MESSAGES = 8
# Past what those buffers hold even once the client's window has grown to its largest.
MESSAGES_PAST_GROWN_WINDOWS = 20

# Peers on their own connections, as separate clients would be; no BDP probing, so
# that the window a stalled client offers stays small.
_OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1), ("grpc.http2.bdp_probe", 0)]


@dataclass
class Served:
    port: int
    pool: asyncpg.Pool
    run_id: str
    stub: rpc.TrackingServiceStub
    name: str  # its pool's connections' application_name


@contextlib.asynccontextmanager
async def tracking_on_own_pool(
    config: Config, pool: asyncpg.Pool, unique: str, messages: int = MESSAGES, **settings: object
) -> AsyncIterator[Served]:
    """A tracking server on a pool of its own, and a run whose metric `loss` has a
    history of `messages` messages."""
    own_config = with_overrides(config, artifact_janitor_interval_seconds=0, **settings)
    # Named, so that the test counts its server's connections and never another test's.
    name, separator = f"stall-{unique}", "&" if "?" in config.database_url else "?"
    own = await database.create_pool(
        f"{config.database_url}{separator}application_name={name}", own_config
    )
    try:
        async with (
            serving(own_config, own, ["tracking"]) as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            stub = rpc.TrackingServiceStub(channel)
            run_id = await _run_with_long_history(stub, pool, unique, messages)
            yield Served(port, own, run_id, stub, name)
    finally:
        await database.close_pool(own)


async def _run_with_long_history(
    stub: rpc.TrackingServiceStub, pool: asyncpg.Pool, unique: str, messages: int
) -> str:
    experiment = await stub.CreateExperiment(
        api.CreateExperimentRequest(project="default", name=f"stall-{unique}")
    )
    run = await stub.CreateRun(
        api.CreateRunRequest(project="default", experiment_id=experiment.experiment.experiment_id)
    )
    run_id = run.run.info.run_id
    await pool.execute(
        """INSERT INTO tracking.metric_chunks
             (run_id, key, min_step, max_step, steps, "values", timestamps_ms)
           SELECT $1::uuid, 'loss', c * $2, c * $2 + $2 - 1,
                  ARRAY(SELECT s FROM generate_series(c * $2, c * $2 + $2 - 1) s),
                  ARRAY(SELECT s * 0.5 FROM generate_series(1, $2) s),
                  ARRAY(SELECT s FROM generate_series(1, $2) s)
           FROM generate_series(0, $3 - 1) c""",
        uuid.UUID(run_id),
        CHUNK_POINTS,
        messages,
    )
    return run_id


@contextlib.asynccontextmanager
async def reader(
    port: int, run_id: str, *, bulk: bool = False
) -> AsyncIterator[grpc.aio.UnaryStreamCall]:
    """A stream of the history on a connection of its own, read as the test reads it."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=_OWN_CONNECTION) as channel:
        stub = rpc.TrackingServiceStub(channel)
        if bulk:
            call = stub.GetMetricHistoryBulk(
                api.GetMetricHistoryBulkRequest(
                    project="default", run_ids=[run_id], metric_key="loss"
                )
            )
        else:
            call = stub.GetMetricHistory(
                api.GetMetricHistoryRequest(project="default", run_id=run_id, metric_key="loss")
            )
        yield call
        call.cancel()


async def _snapshots_held(pool: asyncpg.Pool, served: Served) -> int:
    """The served pool's connections idle in a history read's transaction: waiting on a
    client."""
    return await pool.fetchval(
        """SELECT count(*) FROM pg_stat_activity
           WHERE application_name = $1 AND state = 'idle in transaction'
             AND query LIKE '%metric_chunks%'""",
        served.name,
    )


async def _until_held(pool: asyncpg.Pool, served: Served, count: int) -> None:
    async def held() -> bool:
        return await _snapshots_held(pool, served) == count

    await eventually(held, timeout=30, what=f"{count} history snapshots held")


async def _rest_of(call: grpc.aio.UnaryStreamCall) -> CairnError | None:
    """Reads the stream to its end: the error it ends with, if any."""
    try:
        while await call.read() is not grpc.aio.EOF:
            pass
    except grpc.aio.AioRpcError as error:
        return from_grpc_error(error)
    return None


@pytest.mark.parametrize("bulk", [False, True], ids=["one run", "bulk"])
async def test_a_stalled_reader_is_ended_and_frees_its_connection(
    config: Config, pool: asyncpg.Pool, unique: str, bulk: bool
) -> None:
    async with (
        # Past what the buffers hold: with 8 messages, a bulk read once ended whole
        # while its client was not reading.
        tracking_on_own_pool(
            config, pool, unique, MESSAGES_PAST_GROWN_WINDOWS, stream_stall_seconds=0.5
        ) as served,
        reader(served.port, served.run_id, bulk=bulk) as call,
    ):
        await call.read()  # one message, then the client stops reading
        await _until_held(pool, served, 1)  # the server waits on the client, its snapshot held
        await _until_held(pool, served, 0)
        ended = await _rest_of(call)  # what was sent before the end, then why
    assert isinstance(ended, ResourceExhaustedError)
    assert ended.reason == "STREAM_STALLED"
    assert "CAIRN_STREAM_STALL_SECONDS" in ended.message


async def test_stalled_readers_leave_connections_for_every_other_call(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    size = 4
    async with (
        tracking_on_own_pool(
            config, pool, unique, db_pool_size=size, db_acquire_timeout_seconds=1.0
        ) as served,
        contextlib.AsyncExitStack() as readers,
    ):
        calls = [
            await readers.enter_async_context(reader(served.port, served.run_id))
            for _ in range(size)
        ]
        outcomes = await asyncio.gather(*(call.read() for call in calls), return_exceptions=True)
        refused = [from_grpc_error(o) for o in outcomes if isinstance(o, grpc.RpcError)]
        # Half the pool serves histories; a reader past it waits as for a connection.
        assert len(refused) == size // 2
        assert {(type(e), e.reason) for e in refused} == {(UnavailableError, "DATABASE_BUSY")}
        await _until_held(pool, served, size // 2)  # the readers admitted wait on their clients
        # Everything else still finds a connection, reads and writes alike.
        run = await served.stub.GetRun(
            api.GetRunRequest(project="default", run_id=served.run_id), timeout=20
        )
        assert run.run.info.run_id == served.run_id
        await served.stub.SetTag(
            api.SetTagRequest(
                project="default", run_id=served.run_id, tag=pb.Tag(key="k", value="v")
            ),
            timeout=20,
        )
        # Searches of runs, long reads too, have a share of their own: with one shared
        # half, the stalled readers' turns made every search wait, then DATABASE_BUSY.
        found = await served.stub.SearchRuns(
            api.SearchRunsRequest(project="default", experiment_ids=[run.run.info.experiment_id]),
            timeout=20,
        )
        assert [r.info.run_id for r in found.runs] == [served.run_id]


async def test_a_slow_reader_gets_the_whole_history_as_it_was(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    """The bound is per message: a reader slower than it in total, never on one message,
    reads everything, from the snapshot its stream started with."""
    stall = 1.0
    async with (
        tracking_on_own_pool(config, pool, unique, stream_stall_seconds=stall) as served,
        cairn.TrackingClient.insecure_connection("127.0.0.1", served.port) as client,
        reader(served.port, served.run_id) as call,
    ):
        steps: list[int] = []
        end = MESSAGES * CHUNK_POINTS
        while (message := await call.read()) is not grpc.aio.EOF:
            steps += message.points.steps
            await client.log_metric(served.run_id, "loss", 1.0, step=end + len(steps))
            # The slowness under test, not a wait for a condition: a quarter of the
            # bound a message, so the whole read takes twice the bound and none of it one.
            await asyncio.sleep(stall / 4)
        assert await call.code() == grpc.StatusCode.OK
        assert steps == list(range(end))
        stored = await pool.fetchval(
            "SELECT sum(cardinality(steps)) FROM tracking.metric_chunks WHERE run_id = $1",
            uuid.UUID(served.run_id),
        )
        assert stored == end + MESSAGES  # the points logged meanwhile, after the snapshot


async def test_a_loop_slower_than_the_bound_gets_every_point(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    """iter_metric_history reads ahead of the loop over it: a loop that dwells on a
    point longer than the bound still gets the whole history, async client and sync
    facade alike. The facade hands points over between threads a message at a time:
    a hand-off a point made this read outlast the call's default deadline."""
    stall = 0.5
    messages = MESSAGES_PAST_GROWN_WINDOWS
    end = messages * CHUNK_POINTS
    async with tracking_on_own_pool(
        config, pool, unique, messages, stream_stall_seconds=stall
    ) as served:
        steps: list[int] = []
        async with cairn.TrackingClient.insecure_connection("127.0.0.1", served.port) as client:
            async for point in client.iter_metric_history(served.run_id, "loss"):
                if not steps:
                    await asyncio.sleep(3 * stall)  # the slowness under test
                steps.append(point.step)
        assert steps == list(range(end))

        def dwelling_sync_loop() -> list[int]:
            steps: list[int] = []
            with sync.TrackingClient.insecure_connection("127.0.0.1", served.port) as client:
                for point in client.iter_metric_history(served.run_id, "loss"):
                    if not steps:
                        time.sleep(3 * stall)  # the slowness under test
                    steps.append(point.step)
            return steps

        assert await asyncio.to_thread(dwelling_sync_loop) == list(range(end))
