"""Where a download writes, whatever the objects are named: every local file checked
inside the destination before the first byte, trees a local file system cannot hold
refused whole, names as long as the file system takes, a listing read with the
client's one paging loop, and streams with no default deadline."""

import asyncio
import io
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path, PureWindowsPath

import grpc
import pytest

import cairn
from cairn.artifacts.v1 import artifacts_pb2 as pb
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.artifacts.v1 import artifacts_service_pb2_grpc as rpc
from cairn.exceptions import DeadlineExceededError, FailedPreconditionError, UnknownError
from tests.conftest import new_project


@pytest.fixture
async def files(server_port: int, unique: str) -> AsyncIterator[cairn.ArtifactClient]:
    project = await new_project(server_port, f"t-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", server_port, project=project, timeout=None
    ) as client:
        yield client


async def test_a_name_that_leaves_a_windows_destination_is_refused_first(
    files: cairn.ArtifactClient,
):
    await files.upload("models/ok.txt", b"fine")
    # The store takes a segment "C:" (no "\\", no ".."); on Windows it names a drive,
    # which wins a join: D:\work\downloads \ C:/Users/... is C:\Users\...
    await files.upload("models/C:/Users/Public/evil.bat", b"echo owned")
    destination = PureWindowsPath(r"D:\work\downloads")  # what Path is on Windows
    with pytest.raises(FailedPreconditionError) as refused:
        await files._downloads.tree("models", destination, False, None, None)  # type: ignore[arg-type]
    assert refused.value.reason == "UNSAFE_LOCAL_PATH"
    assert refused.value.metadata["path"] == "models/C:/Users/Public/evil.bat"


async def test_an_object_beside_a_directory_of_its_name_is_refused_before_a_write(
    files: cairn.ArtifactClient, tmp_path: Path
):
    await files.upload("d/a", b"file")
    await files.upload("d/a/b", b"nested")  # the store holds both; no local tree can
    await files.upload("d/0", b"listed first, and not written either")
    with pytest.raises(FailedPreconditionError) as refused:
        await files.download("d", tmp_path / "out")
    assert refused.value.reason == "LOCAL_PATH_CONFLICT"
    assert {refused.value.metadata["path"], refused.value.metadata["other_path"]} == {
        "d/a",
        "d/a/b",
    }
    assert list(tmp_path.iterdir()) == []


async def test_a_name_as_long_as_the_file_system_takes_downloads(
    files: cairn.ArtifactClient, tmp_path: Path
):
    name = "n" * (os.pathconf(tmp_path, "PC_NAME_MAX") - 4) + ".bin"
    (tmp_path / name).write_bytes(b"")  # the file system takes the name itself
    await files.upload(f"d/{name}", b"data")
    written = await files.download(f"d/{name}", f"{tmp_path}/out/")
    assert written.read_bytes() == b"data"
    tree = await files.download("d", tmp_path / "tree")
    assert (tree / name).read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name.endswith(".part")) == []


class _RepeatingLister(rpc.ArtifactServiceServicer):
    """A server (or a proxy replaying an answer) that repeats its next_page_token."""

    def __init__(self) -> None:
        self.pages = 0

    async def StatObject(self, request: api.StatObjectRequest, context: grpc.aio.ServicerContext):
        await context.abort(grpc.StatusCode.NOT_FOUND, "no object")

    async def ListObjects(self, request: api.ListObjectsRequest, context: object):
        self.pages += 1
        return api.ListObjectsResponse(
            objects=[pb.ObjectInfo(project="default", path="d/a.txt", size=1)],
            next_page_token="same-token",
        )


async def test_a_tree_whose_listing_repeats_its_page_token_ends_with_an_error(tmp_path: Path):
    lister = _RepeatingLister()
    server = grpc.aio.server()
    rpc.add_ArtifactServiceServicer_to_server(lister, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with cairn.ArtifactClient.insecure_connection("127.0.0.1", port) as client:
            with pytest.raises(UnknownError) as raised:
                await asyncio.wait_for(client.download("d", tmp_path / "out"), 10)
    finally:
        await server.stop(0)
    assert raised.value.reason == "PAGE_TOKEN_REPEATED"
    assert lister.pages == 2 and list(tmp_path.iterdir()) == []


class _Trickle(io.RawIOBase):
    """A file object (so the upload streams) that takes `seconds` for its 4 chunks."""

    def __init__(self, seconds: float) -> None:
        self.left, self.pause = 4, seconds / 4

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if not self.left:
            return b""
        self.left -= 1
        time.sleep(self.pause)
        return b"x" * 1024


async def test_streamed_transfers_have_no_default_deadline(server_port: int, unique: str):
    """A client's default timeout bounds its unary calls, not its streams: an upload
    or a read takes as long as its bytes do, unless the call passes timeout=."""
    project = await new_project(server_port, f"dl-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", server_port, project=project, timeout=0.3
    ) as store:
        store.direct_threshold = None  # the streams themselves
        info = await store.upload("slow.bin", _Trickle(seconds=0.8))  # type: ignore[arg-type]
        assert info.size == 4 * 1024
        # More than the client buffers: the stream ends only once the reader took it.
        data = os.urandom(40 * 1024 * 1024)
        await store.upload("big.bin", data, timeout=60)
        chunks = store.open("big.bin")
        received = [await anext(chunks)]
        await asyncio.sleep(0.6)  # past the client's default timeout
        received += [chunk async for chunk in chunks]
        assert b"".join(received) == data
        with pytest.raises(DeadlineExceededError):
            await store.upload("slower.bin", _Trickle(seconds=0.8), timeout=0.2)  # type: ignore[arg-type]
