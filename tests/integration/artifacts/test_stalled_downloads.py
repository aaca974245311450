"""A streamed download must keep pace (pace.py) while it holds one of the download
slots and the chunks read for it: a client that stops reading is cut, and cannot keep
every slot from the downloads of others."""

import asyncio
import contextlib
import gc
import logging
import os
import tracemalloc
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from prometheus_client import REGISTRY

import cairn
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.artifacts.v1 import artifacts_service_pb2_grpc as rpc
from cairn.exceptions import (
    AbortedError,
    CairnError,
    ResourceExhaustedError,
    UnavailableError,
    from_grpc_error,
)
from cairn_server import catalog
from cairn_server.artifacts import blobs, pace, servicer
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer
from tests.conftest import eventually, new_project, serving

# Far more than the transport buffers between server and client hold (flow-control
# windows without BDP probing, and socket buffers), so that a server writing to a
# client that stopped reading waits on it.
SIZE = 32 * 1024 * 1024

# A client on a connection of its own, as another process would be; no BDP probing, so
# that the window a stalled client offers stays small. It takes the server's messages,
# which are larger than a channel's default bound.
_OWN_CONNECTION = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.http2.bdp_probe", 0),
    ("grpc.max_receive_message_length", 2 * SIZE),
]


@pytest.fixture
def one_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    """One download at a time: a second waits for the slot of the first."""
    monkeypatch.setattr(servicer, "MAX_DOWNLOADS", 1)


@pytest.fixture
def quick_pace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pace, "IDLE_SECONDS", 1.0)
    monkeypatch.setattr(pace, "MIN_BYTES_PER_SECOND", 1024 * 1024)


@contextlib.asynccontextmanager
async def _serving(
    config: Config, pool: asyncpg.Pool, name: str, body: bytes
) -> AsyncIterator[tuple[int, cairn.ArtifactClient]]:
    """A server of its own (it reads the limits the test patched) and its port, with a
    client of a new project, name, whose object big.bin holds body."""
    async with serving(config, pool, []) as port:
        project = await new_project(port, name)
        async with cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", port, project=project, timeout=None
        ) as store:
            await store.upload("big.bin", body)
            yield port, store


async def _stalled(channel: grpc.aio.Channel, project: str) -> grpc.aio.UnaryStreamCall:
    """A download of big.bin whose client reads its first message, then no more."""
    download = api.DownloadRequest(project=project, path="big.bin")
    call = rpc.ArtifactServiceStub(channel).Download(download)
    assert (await call.read()).chunk
    return call


async def _rest(call: grpc.aio.UnaryStreamCall) -> CairnError:
    """The error that ends the call, read after what it sent before; it must come long
    before this test's bound of 60 s."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async with asyncio.timeout(60):
            while await call.read() != grpc.aio.EOF:
                pass
    return from_grpc_error(raised.value)


@pytest.mark.parametrize("backend", ["config", "s3_config"])
async def test_a_client_that_stops_reading_is_cut_and_leaves_its_slot_to_others(
    backend: str,
    request: pytest.FixtureRequest,
    pool: asyncpg.Pool,
    unique: str,
    quick_pace: None,
    one_slot: None,
) -> None:
    body = os.urandom(SIZE)
    async with (
        _serving(request.getfixturevalue(backend), pool, f"dl-stall-{unique}", body) as (
            port,
            store,
        ),
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=_OWN_CONNECTION) as channel,
    ):
        stalled = await _stalled(channel, store.project)  # it holds the only slot
        # Waits for the slot until the stalled download is cut; the time it waits is
        # not its client's, so it is not cut in turn.
        async with asyncio.timeout(60):
            assert await store.read("big.bin") == body
        error = await _rest(stalled)
    assert isinstance(error, ResourceExhaustedError) and error.reason == "STREAM_STALLED"


def _stalls() -> float:
    """Downloads this process's servers cut for falling behind the pace (or refused for
    another reason of the same status: none in these tests)."""
    labels = {
        "method": "/cairn.artifacts.v1.ArtifactService/Download",
        "code": "RESOURCE_EXHAUSTED",
    }
    return REGISTRY.get_sample_value("cairn_rpc_calls_total", labels) or 0.0


async def _paused_until_cut(
    store: cairn.ArtifactClient, port: int, body: bytes
) -> tuple[AsyncIterator[bytes], bytes]:
    """store's download of big.bin (body) with its first chunk read, paused until the
    server cut it (it holds the only slot, MAX_DOWNLOADS patched to 1)."""
    reading = store.open("big.bin")
    first = await anext(reading)
    # Another client's download waits for the slot until the paused one is cut.
    download = api.DownloadRequest(project=store.project, path="big.bin")
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=_OWN_CONNECTION) as channel,
        asyncio.timeout(60),
    ):
        other = rpc.ArtifactServiceStub(channel).Download(download)
        assert b"".join([reply.chunk async for reply in other]) == body
    return reading, first


async def test_a_reader_that_pauses_past_the_pace_still_gets_every_byte(
    config: Config,
    pool: asyncpg.Pool,
    unique: str,
    quick_pace: None,
    one_slot: None,
) -> None:
    body = os.urandom(2 * SIZE)  # past what a client's grown window holds
    stalls = _stalls()
    async with _serving(config, pool, f"dl-pause-{unique}", body) as (port, store):
        reading, first = await _paused_until_cut(store, port, body)
        rest = [chunk async for chunk in reading]
    assert _stalls() == stalls + 1
    assert first + b"".join(rest) == body


async def test_a_paused_reader_whose_object_was_replaced_meanwhile_is_told(
    config: Config,
    pool: asyncpg.Pool,
    unique: str,
    quick_pace: None,
    one_slot: None,
) -> None:
    body = os.urandom(2 * SIZE)
    async with _serving(config, pool, f"dl-replaced-{unique}", body) as (port, store):
        reading, _ = await _paused_until_cut(store, port, body)
        await store.upload("big.bin", body[::-1], overwrite=True)
        with pytest.raises(AbortedError) as raised:
            async for _ in reading:
                pass
    assert raised.value.reason == "OBJECT_CHANGED"


def _active_downloads() -> float:
    labels = {"method": "/cairn.artifacts.v1.ArtifactService/Download"}
    return REGISTRY.get_sample_value("cairn_rpc_active_streams", labels) or 0.0


async def test_a_cut_download_whose_client_then_leaves_ends_without_an_error_logged(
    config: Config,
    pool: asyncpg.Pool,
    unique: str,
    quick_pace: None,
    one_slot: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The status of a cut stream waits behind the message its client did not take; a
    client that goes away instead is no server error."""
    active = _active_downloads()
    async with _serving(config, pool, f"dl-gone-{unique}", os.urandom(SIZE)) as (port, store):
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=_OWN_CONNECTION)
        await _stalled(channel, store.project)
        async with asyncio.timeout(60):  # the slot is free once the stalled one is cut
            await store.read("big.bin")
        await channel.close()
        await eventually(lambda: _active_downloads() == active, what="the cut call's end")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_cut_download_lets_its_chunks_go_while_its_client_stays(
    config: Config, pool: asyncpg.Pool, unique: str, quick_pace: None
) -> None:
    """Until its client leaves, a cut call waits to send its status, and the error
    that cut it kept every frame it went through alive, with the chunk being sent and
    the message holding it: 8 MiB a call. What stays is the message gRPC was sending."""
    stalls = _stalls()
    async with (
        _serving(config, pool, f"dl-let-go-{unique}", os.urandom(SIZE)) as (port, store),
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=_OWN_CONNECTION) as channel,
    ):
        tracemalloc.start()
        try:
            held = tracemalloc.get_traced_memory()[0]
            await _stalled(channel, store.project)  # its first reply is let go at once
            await eventually(lambda: _stalls() == stalls + 1, timeout=60, what="the cut")
            gc.collect()
            kept = tracemalloc.get_traced_memory()[0] - held
        finally:
            tracemalloc.stop()
    assert kept < blobs.CHUNK + blobs.CHUNK // 2


async def test_a_cut_call_counts_until_its_client_leaves(
    config: Config,
    pool: asyncpg.Pool,
    unique: str,
    quick_pace: None,
    monkeypatch: pytest.MonkeyPatch,
    one_slot: None,
) -> None:
    """A cut call still holds the message gRPC was sending until its client takes it or
    leaves: so many clients that stop reading and stay cannot pile those up."""
    monkeypatch.setattr(servicer, "MAX_DOWNLOAD_CALLS", 1)
    stalls = _stalls()
    async with _serving(config, pool, f"dl-calls-{unique}", os.urandom(SIZE)) as (port, store):
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=_OWN_CONNECTION)
        await _stalled(channel, store.project)
        await eventually(lambda: _stalls() == stalls + 1, timeout=60, what="the cut")
        reading = asyncio.ensure_future(store.read("big.bin"))
        # Far longer than the read takes once it may start (well under a second).
        done, _ = await asyncio.wait({reading}, timeout=5)
        assert not done
        await channel.close()  # the stalled client leaves, and its call ends
        async with asyncio.timeout(60):
            assert len(await reading) == SIZE


async def test_a_download_waiting_for_a_slot_as_the_server_stops_is_sent_elsewhere_at_once(
    config: Config, pool: asyncpg.Pool, unique: str, one_slot: None
) -> None:
    """It waited out the whole grace period for the slot the download holding it kept,
    and was cut at its end: now it is told at once to call again, on another server."""
    server = CairnServer(config, catalog.select([]), pool)
    port = await server.start()
    project = await new_project(port, f"dl-stop-{unique}")
    async with cairn.ArtifactClient.insecure_connection("127.0.0.1", port, project=project) as s:
        await s.upload("big.bin", os.urandom(SIZE))
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=_OWN_CONNECTION) as holding,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=_OWN_CONNECTION) as waiting,
    ):
        stalled = await _stalled(holding, project)  # it holds the only slot
        active = _active_downloads()
        download = api.DownloadRequest(project=project, path="big.bin")
        waits = rpc.ArtifactServiceStub(waiting).Download(download)
        reply = asyncio.ensure_future(waits.read())
        await eventually(lambda: _active_downloads() == active + 1, what="the wait for a slot")
        stopping = asyncio.ensure_future(server.stop(grace=120))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async with asyncio.timeout(60):  # long before the grace period ends
                await reply
        stalled.cancel()  # its client leaves: the stop has nothing left to wait for
        await stopping
    error = from_grpc_error(raised.value)
    assert isinstance(error, UnavailableError) and error.reason == "SHUTTING_DOWN"
