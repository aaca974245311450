"""A streamed upload must keep pace (pace.py) while it holds one of the writer
threads: stalled or trickling clients are cut, and cannot take every thread from the
uploads of others."""

import asyncio
import threading
from collections.abc import AsyncIterator

import grpc
import pytest

import cairn
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.artifacts.v1 import artifacts_service_pb2_grpc as rpc
from cairn.exceptions import ResourceExhaustedError, from_grpc_error
from cairn_server.artifacts import pace, threads
from tests.conftest import new_project


@pytest.fixture
def quick_pace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pace, "IDLE_SECONDS", 1.0)
    monkeypatch.setattr(pace, "MIN_BYTES_PER_SECOND", 1024 * 1024)


def _stalling(project: str, path: str, gone: asyncio.Event) -> AsyncIterator[api.UploadRequest]:
    """An upload whose client sends its header and one byte, then nothing until gone."""

    async def requests() -> AsyncIterator[api.UploadRequest]:
        yield api.UploadRequest(header=api.UploadHeader(project=project, path=path))
        yield api.UploadRequest(chunk=b"x")
        await gone.wait()

    return requests()


async def _refusal(call: grpc.aio.StreamUnaryCall) -> cairn.exceptions.CairnError:
    """The call's error, which must come long before this test's bound of 60 s."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async with asyncio.timeout(60):
            await call
    return from_grpc_error(raised.value)


async def test_a_stalled_upload_is_cut_and_stores_nothing(
    server_port: int, unique: str, quick_pace: None
) -> None:
    project = await new_project(server_port, f"stall-{unique}")
    gone = asyncio.Event()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server_port}") as channel:
        call = rpc.ArtifactServiceStub(channel).Upload(_stalling(project, "stalled", gone))
        error = await _refusal(call)
    gone.set()
    assert isinstance(error, ResourceExhaustedError) and error.reason == "STREAM_STALLED"
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", server_port, project=project
    ) as store:
        assert await store.list("") == []


async def test_a_trickling_upload_is_cut(server_port: int, unique: str, quick_pace: None) -> None:
    project = await new_project(server_port, f"trickle-{unique}")

    async def trickle() -> AsyncIterator[api.UploadRequest]:
        yield api.UploadRequest(header=api.UploadHeader(project=project, path="trickled"))
        while True:  # a byte every 50 ms: never silent, far behind the pace
            yield api.UploadRequest(chunk=b"x")
            await asyncio.sleep(0.05)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server_port}") as channel:
        error = await _refusal(rpc.ArtifactServiceStub(channel).Upload(trickle()))
    assert error.reason == "STREAM_STALLED"


async def test_stalled_uploads_on_every_writer_thread_leave_room_for_others(
    server_port: int, unique: str, quick_pace: None
) -> None:
    project = await new_project(server_port, f"crowd-{unique}")
    gone = asyncio.Event()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server_port}") as channel:
        stub = rpc.ArtifactServiceStub(channel)
        stalled = [
            stub.Upload(_stalling(project, f"stalled/{n}", gone))
            for n in range(threads.UPLOAD_THREADS)
        ]
        async with cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", server_port, project=project
        ) as store:
            # Waits for a thread the stalled uploads held, until they are cut.
            info = await store.upload("victim.txt", b"hello", timeout=60)
            assert info.size == 5
        refusals = await asyncio.gather(*(_refusal(call) for call in stalled))
    gone.set()
    assert {error.reason for error in refusals} == {"STREAM_STALLED"}


async def test_time_spent_waiting_for_a_writer_thread_is_not_the_clients(
    server_port: int, unique: str, quick_pace: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that sent its whole upload at once, then waited for a thread past the
    pace's idle time (a busy server), is stored, not cut."""
    held, writers = threading.Event(), threads._DaemonThreads(1, "test-upload")
    monkeypatch.setattr(threads, "_uploads", writers)
    writers.submit(held.wait)  # another upload holds the only writer thread
    project = await new_project(server_port, f"queued-{unique}")
    body = [bytes([n]) * 1024 for n in range(10)]

    async def requests() -> AsyncIterator[api.UploadRequest]:
        yield api.UploadRequest(header=api.UploadHeader(project=project, path="queued.bin"))
        for chunk in body:
            yield api.UploadRequest(chunk=chunk)
        yield api.UploadRequest(finish=api.UploadFinish())

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server_port}") as channel:
        upload = asyncio.ensure_future(rpc.ArtifactServiceStub(channel).Upload(requests()))
        # Twice the idle time the pace allows a client, spent waiting for the thread.
        await asyncio.sleep(2 * pace.IDLE_SECONDS)
        held.set()
        reply = await upload
    assert reply.object.size == len(b"".join(body))
