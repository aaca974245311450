"""DownloadFiles answers the bytes of many small objects in one call (docs/artifacts.md,
"Trees"); a directory's `download` brings its small files down so, each file whole or
not at all and checked against its sha256, and each the answer leaves out alone."""

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import grpc
import pytest

import cairn
from cairn import _backoff
from cairn._clients._file_batches import Batch
from cairn._progress import meter
from cairn.artifacts.v1 import artifacts_pb2 as pb
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.artifacts.v1 import artifacts_service_pb2_grpc
from cairn.exceptions import DataLossError, InvalidArgumentError, from_grpc_error
from cairn.types import ObjectInfo
from cairn_server.artifacts import file_reads
from cairn_server.artifacts.filesystem import FilesystemBackend
from cairn_server.artifacts.store import ObjectStore
from cairn_server.common.config import Config
from tests.conftest import eventually, new_project
from tests.integration.artifacts.conftest import count_calls

TREE = {
    "t/a.txt": b"alpha",
    "t/empty": b"",
    "t/sub/b.bin": bytes(range(256)) * 16,
    "t/sub/deeper/c": b"c" * 1000,
}


@pytest.fixture
async def fs_store(server_port: int, unique: str) -> AsyncIterator[cairn.ArtifactClient]:
    """An ArtifactClient in a project of its own, on the filesystem backend, whose
    stored files a test reaches through their file:// URIs."""
    project = await new_project(server_port, f"f-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", server_port, project=project, timeout=None
    ) as client:
        yield client


def _stored_file(info: ObjectInfo) -> Path:
    return Path(unquote(urlsplit(info.uri).path))


async def _upload(client: cairn.ArtifactClient, files: dict[str, bytes]) -> dict[str, ObjectInfo]:
    return {path: await client.upload(path, content) for path, content in files.items()}


async def _fetch(
    stub: artifacts_service_pb2_grpc.ArtifactServiceStub, project: str, *paths: str
) -> api.DownloadFilesResponse:
    try:
        return await stub.DownloadFiles(api.DownloadFilesRequest(project=project, paths=paths))
    except grpc.RpcError as error:
        raise from_grpc_error(error) from None


def _tree_under(root: Path) -> dict[str, bytes]:
    return {
        str(file.relative_to(root)): file.read_bytes() for file in root.rglob("*") if file.is_file()
    }


async def test_a_directory_of_small_files_comes_down_in_one_call(
    store: cairn.ArtifactClient, tmp_path: Path
) -> None:
    """Four files, one empty, in nested folders: one DownloadFiles call and no stream,
    where each file was a Download stream of its own."""
    await _upload(store, TREE)
    batches = count_calls(store._downloads.batches, "DownloadFiles")
    streams = count_calls(store._downloads, "Download")

    written = await store.download("t", tmp_path / "out")

    assert _tree_under(written) == {path[2:]: content for path, content in TREE.items()}
    assert (batches.calls, streams.calls) == (1, 0)


async def test_download_files_answers_each_path_in_order(
    store: cairn.ArtifactClient, stub: artifacts_service_pb2_grpc.ArtifactServiceStub
) -> None:
    """Each path gets its object and bytes, in the request's order; a path holding no
    object comes back empty, for its client to download alone (which says NOT_FOUND)."""
    stored = await _upload(store, TREE)

    reply = await _fetch(stub, store.project, "t/sub/b.bin", "t/none", "t/empty", "t/a.txt")

    assert [file.object.path for file in reply.files] == ["t/sub/b.bin", "", "t/empty", "t/a.txt"]
    assert [file.HasField("content") for file in reply.files] == [True, False, True, True]
    for file in reply.files[0], reply.files[2], reply.files[3]:
        assert file.content == TREE[file.object.path]
        assert file.object.sha256 == stored[file.object.path].sha256
        assert file.object.uri == stored[file.object.path].uri
    assert not reply.files[1].HasField("object")


async def test_download_files_leaves_out_what_its_answer_has_no_room_for(
    store: cairn.ArtifactClient, stub: artifacts_service_pb2_grpc.ArtifactServiceStub
) -> None:
    """At most CONTENT_BYTES of content an answer: a file past what is left comes
    without its bytes, and a smaller one after it still fits."""
    big = file_reads.CONTENT_BYTES // 2 + 1
    await _upload(store, {"f/one": b"1" * big, "f/two": b"2" * big, "f/three": b"3"})

    reply = await _fetch(stub, store.project, "f/one", "f/two", "f/three")

    assert [file.object.path for file in reply.files] == ["f/one", "f/two", "f/three"]
    assert [file.HasField("content") for file in reply.files] == [True, False, True]
    assert reply.files[1].object.size == big


async def test_download_files_calls_together_read_no_more_than_their_share_of_the_store(
    store: cairn.ArtifactClient,
    stub: artifacts_service_pb2_grpc.ArtifactServiceStub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Four calls of 20 objects at once read STORE_READS objects at a time in all, on
    as many store threads: the store's other threads stay free for streams, signing
    and completions (each call reading eight took 32, every store thread there is)."""
    paths = [f"s/{n:02}" for n in range(80)]
    for path in paths:
        await store.upload(path, path.encode())
    reading, threads_reading, most = 0, set[int](), 0
    changed = threading.Condition()
    whole = file_reads._whole

    def counted(*args: Any) -> bytes | None:
        """A thread's first read holds it until as many threads read as may, or until
        no more can start: as many overlap as the server lets."""
        nonlocal reading, most
        with changed:
            reading += 1
            most = max(most, reading)
            if threading.get_ident() not in threads_reading:
                threads_reading.add(threading.get_ident())
                changed.notify_all()
                changed.wait_for(lambda: len(threads_reading) >= file_reads.STORE_READS, timeout=10)
        try:
            return whole(*args)
        finally:
            with changed:
                reading -= 1

    monkeypatch.setattr(file_reads, "_whole", counted)
    replies = await asyncio.gather(
        *(_fetch(stub, store.project, *paths[n : n + 20]) for n in range(0, 80, 20))
    )

    assert [file.content for reply in replies for file in reply.files] == [
        path.encode() for path in paths
    ]
    assert most == file_reads.STORE_READS


async def test_a_calls_objects_are_read_by_a_few_store_threads_each_taking_the_next(
    store: cairn.ArtifactClient,
    stub: artifacts_service_pb2_grpc.ArtifactServiceStub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call of 100 small objects starts STORE_READS store threads, each reading the
    next object left as it is done with one, not a thread an object (a hand-off each
    cost the filesystem backend nearly a third of its files a second)."""
    paths = [f"r/{n:03}" for n in range(100)]
    for path in paths:
        await store.upload(path, path.encode())
    started = []
    start_in_store = file_reads.threads.start_in_store

    def counted(function: Any, *args: Any) -> Any:
        started.append(function)
        return start_in_store(function, *args)

    monkeypatch.setattr(file_reads.threads, "start_in_store", counted)
    reply = await _fetch(stub, store.project, *paths)

    assert [file.content for file in reply.files] == [path.encode() for path in paths]
    assert started.count(file_reads._read_left) == file_reads.STORE_READS


async def test_a_slow_read_holds_up_none_of_the_objects_after_it(
    store: cairn.ArtifactClient,
    stub: artifacts_service_pb2_grpc.ArtifactServiceStub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While one thread's read waits, the call's other threads read every other object:
    cut into fixed runs, the objects after a slow one in its run waited for it."""
    paths = [f"w/{n:02}" for n in range(24)]
    for path in paths:
        await store.upload(path, path.encode())
    others_read, read, waited = threading.Event(), [], []
    whole = file_reads._whole

    def first_waits(backend: Any, stored: Any) -> bytes | None:
        read.append(stored.path)
        if stored.path == paths[0]:
            waited.append(others_read.wait(10))  # the others are read meanwhile, or never
        elif len(read) == len(paths):
            others_read.set()
        return whole(backend, stored)

    monkeypatch.setattr(file_reads, "_whole", first_waits)
    reply = await _fetch(stub, store.project, *paths)

    assert waited == [True]
    assert [file.content for file in reply.files] == [path.encode() for path in paths]


async def test_a_read_of_a_cancelled_call_keeps_its_share_until_its_thread_ends(
    fs_store: cairn.ArtifactClient,
    pool: asyncpg.Pool,
    config: Config,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thread cannot be cancelled: the read of a call that left (its client gone, its
    deadline passed) goes on, and counts among the STORE_READS until it ends; its thread
    reads no object after it, as the answer they were for goes nowhere."""
    for name in "abc":
        await fs_store.upload(f"c/{name}", name.encode())
    entered, release, read = threading.Event(), threading.Event(), []
    whole = file_reads._whole

    def held(backend: Any, stored: Any) -> bytes | None:
        read.append(stored.path)
        entered.set()
        release.wait(10)
        return whole(backend, stored)

    monkeypatch.setattr(file_reads, "_whole", held)
    monkeypatch.setattr(file_reads, "STORE_READS", 1)
    reads = file_reads.FileReads(
        ObjectStore(pool),
        FilesystemBackend(config.artifact_dir),
        lambda stored: pb.ObjectInfo(path=stored.path),
        1024 * 1024,
    )
    request = api.DownloadFilesRequest(project=fs_store.project, paths=["c/a", "c/b", "c/c"])
    answering = asyncio.ensure_future(reads.answer(request))
    await asyncio.to_thread(entered.wait, 10)

    answering.cancel()
    with pytest.raises(asyncio.CancelledError):
        await answering
    assert reads._reads.locked()  # the thread still reads

    release.set()
    await eventually(lambda: not reads._reads.locked(), what="the share given back")
    assert read == ["c/a"]


@pytest.mark.parametrize(
    ("paths", "field", "reason"),
    [
        ([], "paths", "INVALID_ARGUMENT"),
        ([f"p/{n}" for n in range(101)], "paths", "INVALID_ARGUMENT"),
        (["p/a", "p/b", "p/a"], "paths[2]", "INVALID_PATH"),
        (["p/a", "p/../b"], "paths[1]", "INVALID_PATH"),
        (["p/"], "paths[0]", "INVALID_PATH"),
    ],
)
async def test_download_files_refuses_a_request_it_cannot_answer(
    store: cairn.ArtifactClient,
    stub: artifacts_service_pb2_grpc.ArtifactServiceStub,
    paths: list[str],
    field: str,
    reason: str,
) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        await _fetch(stub, store.project, *paths)

    assert refused.value.reason == reason
    assert [violation for violation, _ in refused.value.field_violations] == [field]


async def test_a_file_left_out_of_an_answer_is_the_callers_to_download_alone(
    store: cairn.ArtifactClient, tmp_path: Path
) -> None:
    """A file replaced, after its directory was listed, by one too large for the
    answer: the batch writes the others and hands it back, nothing of it written."""
    stored = await _upload(store, {"r/a": b"a", "r/b": b"b"})
    await store.upload("r/b", b"B" * (file_reads.CONTENT_BYTES + 1), overwrite=True)
    listed = [(stored["r/a"], tmp_path / "a"), (stored["r/b"], tmp_path / "b")]

    with meter(None, "download", "r/", 2) as counted:
        left = await store._downloads.batches.fetch(
            Batch(listed, 2), lambda file: (file[0].path, file[1]), counted, None, None
        )

    assert left == [listed[1]]
    assert _tree_under(tmp_path) == {"a": b"a"}


async def test_a_file_whose_bytes_are_gone_fails_its_download_as_data_loss(
    fs_store: cairn.ArtifactClient, tmp_path: Path
) -> None:
    """Bytes removed behind the service's back: the answer leaves the file out, and
    its download alone says what a Download of it says; the other files are there."""
    stored = await _upload(fs_store, {"g/a": b"a", "g/b": b"b", "g/c": b"c"})
    _stored_file(stored["g/b"]).unlink()

    with pytest.raises(DataLossError) as lost:
        await fs_store.download("g", tmp_path / "out")

    assert lost.value.reason == "OBJECT_BYTES_MISSING"
    assert _tree_under(tmp_path / "out") == {"a": b"a", "c": b"c"}


async def test_bytes_changed_in_the_store_are_refused_and_never_written(
    fs_store: cairn.ArtifactClient, tmp_path: Path
) -> None:
    """The stored file overwritten in place, at its size: the answer carries the bytes
    the store now holds, which the client checks against the object's sha256 before
    it writes anything of them."""
    stored = await _upload(fs_store, {"h/a": b"aaaa", "h/b": b"bbbb"})
    _stored_file(stored["h/b"]).write_bytes(b"BBBB")

    with pytest.raises(DataLossError) as refused:
        await fs_store.download("h", tmp_path / "out")

    assert refused.value.reason == "CHECKSUM_MISMATCH"
    assert refused.value.metadata["sha256"] == hashlib.sha256(b"BBBB").hexdigest()
    assert not (tmp_path / "out" / "b").exists()


async def test_a_server_without_download_files_is_downloaded_from_file_by_file(
    store: cairn.ArtifactClient,
    tmp_path: Path,
    server_port: int,
    s3_server_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server of a release before DownloadFiles answers it UNIMPLEMENTED: the files
    come down one stream each, and the client asks again NOT_OFFERED_SECONDS later."""
    port = server_port if store.backend == "filesystem" else s3_server_port  # type: ignore[attr-defined]
    await _upload(store, {"o/a": b"a", "o/b": b"b"})
    fetches = store._downloads.batches
    served = fetches._stub
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        unknown = channel.unary_unary(
            "/cairn.artifacts.v1.ArtifactService/DownloadFilesOfALaterRelease",
            request_serializer=api.DownloadFilesRequest.SerializeToString,
            response_deserializer=api.DownloadFilesResponse.FromString,
        )
        fetches._stub = type("Older", (), {"DownloadFiles": unknown})()
        streams = count_calls(store._downloads, "Download")
        written = await store.download("o", tmp_path / "old")
    assert _tree_under(written) == {"a": b"a", "b": b"b"}
    assert streams.calls == 2
    # Meanwhile files are parcelled one by one, each moving beside the others, not in
    # batches that would come back whole to be fetched one after another.
    assert store._downloads.parcels(["x", "y"], len, lambda size: False) == ["x", "y"]

    fetches._stub = served
    upgraded = count_calls(fetches, "DownloadFiles")
    await store.download("o", tmp_path / "soon")
    assert upgraded.calls == 0  # within NOT_OFFERED_SECONDS: not asked
    later = _backoff.monotonic() + _backoff.NOT_OFFERED_SECONDS
    monkeypatch.setattr(_backoff, "monotonic", lambda: later)
    written = await store.download("o", tmp_path / "later")
    assert _tree_under(written) == {"a": b"a", "b": b"b"}
    assert (upgraded.calls, streams.calls) == (1, 4)
