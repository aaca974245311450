"""A download held to what it asked for, whatever the server answers: a name the local
file system cannot hold (a real server stores it), and an in-process server that sends
more bytes than a range's length or the object's stated size."""

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

import cairn
from cairn.artifacts.v1 import artifacts_pb2 as pb
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.artifacts.v1 import artifacts_service_pb2_grpc as rpc
from cairn.exceptions import DataLossError, FailedPreconditionError
from tests.conftest import eventually, new_project

STATED = b"abcd"  # what the hostile server says the object holds
EXTRA = b"Z" * 65536  # what it sends on with, chunk after chunk
EXTRA_CHUNKS = 1024  # 64 MiB: far more than any stream buffers


async def test_a_directory_holding_a_name_too_long_here_is_a_failed_local_write(
    server_port: int, unique: str, tmp_path: Path
):
    """A directory download of an object with a 300-byte segment into a folder there
    already raised a bare OSError (ENAMETOOLONG) from the check of what it holds."""
    project = await new_project(server_port, f"h-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", server_port, project=project, timeout=None
    ) as store:
        await store.upload("long/a.txt", b"fits")
        await store.upload("long/" + "s" * 300, b"no file system here names it")
        with pytest.raises(FailedPreconditionError) as refused:
            await store.download("long/", tmp_path)
    assert refused.value.reason == "LOCAL_WRITE_FAILED"
    assert refused.value.metadata["errno"] == "ENAMETOOLONG"
    assert "nothing was written" in str(refused.value)
    assert list(tmp_path.iterdir()) == []


async def test_a_name_too_long_met_in_a_new_folder_is_named_as_its_target(
    server_port: int, unique: str, tmp_path: Path
):
    """Into a folder not made yet, the long name fails only as its file is renamed into
    place; the error named the temporary file, already removed, not the target."""
    project = await new_project(server_port, f"h-{unique}")
    long_name = "s" * 300
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", server_port, project=project, timeout=None
    ) as store:
        await store.upload(f"long/{long_name}", b"no file system here names it")
        with pytest.raises(FailedPreconditionError) as refused:
            await store.download("long/", tmp_path / "new")
    assert refused.value.reason == "LOCAL_WRITE_FAILED"
    assert refused.value.metadata["path"] == str(tmp_path / "new" / long_name)


class _Overflowing(rpc.ArtifactServiceServicer):
    """States an object of 4 bytes, sends the range asked for, then sends on."""

    def __init__(self) -> None:
        self.states_the_object = True
        self.sent = 0
        self.stopped_at: int | None = None  # chunks sent when the stream ended

    async def StatObject(self, request: api.StatObjectRequest, context: object):
        return api.StatObjectResponse(object=_stated(request.path))

    async def Download(self, request: api.DownloadRequest, context: object):
        end = request.offset + request.length if request.length else None
        try:
            stated = _stated(request.path) if self.states_the_object else None
            yield api.DownloadResponse(object=stated, chunk=STATED[request.offset : end])
            for self.sent in range(1, EXTRA_CHUNKS + 1):
                yield api.DownloadResponse(chunk=EXTRA)
        finally:
            self.stopped_at = self.sent


def _stated(path: str) -> pb.ObjectInfo:
    return pb.ObjectInfo(path=path, size=len(STATED), sha256=hashlib.sha256(STATED).hexdigest())


@pytest.fixture
async def hostile() -> AsyncIterator[tuple[cairn.ArtifactClient, _Overflowing]]:
    servicer, server = _Overflowing(), grpc.aio.server()
    rpc.add_ArtifactServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with cairn.ArtifactClient.insecure_connection("127.0.0.1", port) as client:
            yield client, servicer
    finally:
        await server.stop(0)


async def test_a_range_ends_at_the_first_chunk_past_its_length(
    hostile: tuple[cairn.ArtifactClient, _Overflowing],
):
    """read(offset=1, length=2) returned all the server sent (64 MiB here, and a
    stream without end grew the read without bound)."""
    client, server = hostile
    with pytest.raises(DataLossError) as raised:
        await client.read("f", offset=1, length=2)
    assert raised.value.reason == "CHECKSUM_MISMATCH"
    assert raised.value.metadata == {"size": "2", "received": str(2 + len(EXTRA))}
    await eventually(lambda: server.stopped_at is not None, what="the stream ended")
    assert server.stopped_at is not None and server.stopped_at < EXTRA_CHUNKS


async def test_a_download_stops_at_the_first_chunk_past_the_stated_size(
    hostile: tuple[cairn.ArtifactClient, _Overflowing], tmp_path: Path
):
    """A download of an object stated as 4 bytes wrote all 64 MiB the server sent to
    its .part file, and only then failed on the checksum."""
    client, server = hostile
    with pytest.raises(DataLossError) as raised:
        await client.download("f", tmp_path / "f")
    assert raised.value.reason == "CHECKSUM_MISMATCH"
    assert raised.value.metadata == {"size": "4", "received": str(4 + len(EXTRA))}
    await eventually(lambda: server.stopped_at is not None, what="the stream ended")
    assert server.stopped_at is not None and server.stopped_at < EXTRA_CHUNKS
    assert list(tmp_path.iterdir()) == []


async def test_a_stream_that_never_says_what_it_sends_ends_at_its_first_chunk(
    hostile: tuple[cairn.ArtifactClient, _Overflowing],
):
    """Without the object's size (the first message states it), a whole read had no
    bound: all 64 MiB were taken, and a stream without end grew it for ever."""
    client, server = hostile
    server.states_the_object = False
    with pytest.raises(DataLossError) as raised:
        await client.read("f")
    assert raised.value.metadata == {"size": "0", "received": str(len(STATED))}
    await eventually(lambda: server.stopped_at is not None, what="the stream ended")
    assert server.stopped_at is not None and server.stopped_at < EXTRA_CHUNKS
