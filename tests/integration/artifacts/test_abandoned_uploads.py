"""What an upload holds of the server while it does not go on: one the client gives up
midway (its source raises, or the caller cancels) ends on the server at once (it was
left open until the channel closed, the server holding its buffers and a writer's file,
about 2 MB a call), and one waiting for a writer thread holds only its header."""

import asyncio
import hashlib
import io
import threading
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from prometheus_client import REGISTRY

import cairn
from cairn._transport import STREAM_VERDICT_HEADER
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.artifacts.v1 import artifacts_service_pb2_grpc as rpc
from cairn_server.artifacts import threads
from cairn_server.common.config import Config
from tests.conftest import eventually, new_project, serving

CHUNK = 256 * 1024
_OPEN = "SELECT count(*) FROM artifacts.uploads WHERE project = $1"


class _Failing(io.RawIOBase):
    """A file that reads a few chunks, then fails: a network share that drops."""

    def __init__(self, chunks: int) -> None:
        self.left = chunks

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.left == 0:
            raise OSError("the share went away")
        self.left -= 1
        size = min(len(buffer), CHUNK)
        buffer[:size] = b"x" * size
        return size


async def _no_upload_open(pool: asyncpg.Pool, project: str) -> None:
    await eventually(
        lambda: _none_open(pool, project), timeout=5, what="the server ends the upload"
    )


async def _none_open(pool: asyncpg.Pool, project: str) -> bool:
    return await pool.fetchval(_OPEN, project) == 0


async def test_an_upload_whose_source_fails_ends_on_the_server(
    store: cairn.ArtifactClient, pool: asyncpg.Pool
) -> None:
    with pytest.raises(OSError, match="the share went away"):
        await store.upload("t/failed.bin", _Failing(chunks=8))  # type: ignore[arg-type]
    await _no_upload_open(pool, store.project)


async def test_an_upload_cancelled_by_its_caller_ends_on_the_server(
    store: cairn.ArtifactClient, pool: asyncpg.Pool
) -> None:
    """Cancelled while it waits for its source (a slow disk, a share that hangs)."""
    reading, release = threading.Event(), threading.Event()

    class _Hanging(_Failing):
        def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
            if self.left == 0:
                reading.set()
                release.wait(30)
            return super().readinto(buffer)

    task = asyncio.create_task(store.upload("t/cancelled.bin", _Hanging(chunks=8)))  # type: ignore[arg-type]
    try:
        assert await asyncio.to_thread(reading.wait, 30)
        await eventually(lambda: _opened(pool, store.project), what="the server opens it")
        task.cancel()
        # The cancelled call waits for its read to end before it closes the source
        # (its read would read a closed file): held until the finally, it waited 30 s.
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _no_upload_open(pool, store.project)
    finally:
        release.set()


async def _opened(pool: asyncpg.Pool, project: str) -> bool:
    return await pool.fetchval(_OPEN, project) > 0


async def test_uploads_past_the_writer_threads_wait_before_they_are_accepted(
    config: Config, pool: asyncpg.Pool, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accepted at once, an upload waiting for a writer thread held the chunks its
    client sent meanwhile (about 2 MB a call), however many waited. It now holds its
    header alone: its client sends nothing before the verdict."""
    monkeypatch.setattr(threads, "UPLOAD_THREADS", 1)
    async with serving(config, pool, ["artifacts"]) as port:
        project = await new_project(port, f"wait-{unique}")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = rpc.ArtifactServiceStub(channel)
            first, first_sent = _held_upload(stub, project, "first")
            assert await _verdict(first) == "accepted"
            second, second_sent = _held_upload(stub, project, "second")
            # Nothing the test could wait for happens here: the verdict must not come
            # while the first upload holds the only writer.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(asyncio.shield(_verdict(second)), 1.0)
            first_sent.set()
            assert (await first).object.size == 1
            assert await _verdict(second) == "accepted"
            second_sent.set()
            assert (await second).object.size == 1


def _held_upload(
    stub: rpc.ArtifactServiceStub, project: str, path: str
) -> tuple[grpc.aio.StreamUnaryCall, asyncio.Event]:
    """An upload of one byte whose finish waits for the event returned."""
    finish = asyncio.Event()

    async def requests() -> AsyncIterator[api.UploadRequest]:
        yield api.UploadRequest(header=api.UploadHeader(project=project, path=path))
        yield api.UploadRequest(chunk=b"x")
        await finish.wait()
        digest = hashlib.sha256(b"x").hexdigest()
        yield api.UploadRequest(finish=api.UploadFinish(sha256=digest))

    return stub.Upload(requests()), finish


async def _verdict(call: grpc.aio.StreamUnaryCall) -> str | None:
    return dict(await call.initial_metadata() or ()).get(STREAM_VERDICT_HEADER)


async def test_an_upload_under_way_counts_as_an_active_stream(
    server_port: int, unique: str
) -> None:
    """cairn_rpc_active_streams, which an operator draining a pod looks at, counted
    server streams (downloads, histories) and left out uploads."""

    def uploads() -> float:
        labels = {"method": "/cairn.artifacts.v1.ArtifactService/Upload"}
        return REGISTRY.get_sample_value("cairn_rpc_active_streams", labels) or 0.0

    project = await new_project(server_port, f"active-{unique}")
    before = uploads()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server_port}") as channel:
        call, finish = _held_upload(rpc.ArtifactServiceStub(channel), project, "held.bin")
        await eventually(lambda: uploads() == before + 1, what="the upload counted")
        finish.set()
        assert (await call).object.size == 1
    await eventually(lambda: uploads() == before, what="the upload no longer counted")


def _upload_calls(code: str) -> float:
    labels = {"method": "/cairn.artifacts.v1.ArtifactService/Upload", "code": code}
    return REGISTRY.get_sample_value("cairn_rpc_calls_total", labels) or 0.0


def _uploads_under_way() -> float:
    labels = {"method": "/cairn.artifacts.v1.ArtifactService/Upload"}
    return REGISTRY.get_sample_value("cairn_rpc_active_streams", labels) or 0.0


@pytest.mark.parametrize("cut", ["after its header", "before its header"])
async def test_an_upload_its_client_cancels_is_counted_cancelled(
    server_port: int, unique: str, cut: str
) -> None:
    """A client's cancel ends an upload's request stream as a stream's end does, a moment
    before it reaches the call: such uploads were logged and counted INVALID_ARGUMENT
    ("ended without its finish message", or before its header), as if malformed, where
    docs/configuration.md says a call its client cancelled counts CANCELLED."""
    project = await new_project(server_port, f"cancelled-{unique}")
    cancelled, invalid = _upload_calls("CANCELLED"), _upload_calls("INVALID_ARGUMENT")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server_port}") as channel:
        stub = rpc.ArtifactServiceStub(channel)
        for attempt in range(3):
            if cut == "after its header":
                call, _ = _held_upload(stub, project, f"cut-{attempt}.bin")
                assert await _verdict(call) is not None  # the server reads its stream
            else:
                under_way = _uploads_under_way()
                call = stub.Upload(_nothing_sent())
                await eventually(lambda: _uploads_under_way() > under_way, what="under way")  # noqa: B023
            call.cancel()
            counted = cancelled + attempt + 1
            await eventually(lambda: _upload_calls("CANCELLED") == counted, what="counted")  # noqa: B023
    assert _upload_calls("INVALID_ARGUMENT") == invalid


async def _nothing_sent() -> AsyncIterator[api.UploadRequest]:
    """An upload's stream that sends nothing until it is cancelled."""
    await asyncio.Event().wait()
    yield api.UploadRequest()
