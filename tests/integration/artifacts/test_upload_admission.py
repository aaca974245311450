"""What a streamed upload holds from its admission (its memory, a writer thread) to the
end of its writer, and the uploads refused before their verdict: past the uploads that
may wait (UPLOADS_BUSY), or expired as they waited (UPLOAD_EXPIRED)."""

import asyncio
import hashlib
import os
import urllib.parse
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import grpc
import pytest
from minio.error import S3Error

import cairn
from cairn._clients import _file_batches
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.artifacts.v1 import artifacts_service_pb2_grpc as rpc
from cairn_server.artifacts import budget, s3, servicer, slots, streams, threads
from cairn_server.artifacts.store import ObjectStore
from cairn_server.common.config import Config
from tests.conftest import BUCKET, eventually, new_project, s3_client, serving
from tests.proxy import S3AnsweringProxy

MIB = 1024 * 1024
SIZE = 12 * MIB  # three parts on S3: 5, 5 and 2 MiB
VERDICT_SECONDS = 30.0  # an upload neither let in nor refused waits for ever: fail instead


class CompletionHoldingProxy(S3AnsweringProxy):
    """An HTTP/1.1 proxy to S3 that holds each multipart completion until `release` is
    set, and says which object it completes (`completing`, set once one arrived)."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.completing = asyncio.Event()
        self.release = asyncio.Event()
        self.object_name = ""

    async def before_forwarding(self, method: str, target: str) -> None:
        if method == "POST" and "uploadId=" in target:
            path = urllib.parse.unquote(urllib.parse.urlsplit(target).path)
            self.object_name = path.removeprefix(f"/{BUCKET}/")
            self.completing.set()
            await self.release.wait()


class RecordedBudget(budget.ByteBudget):
    made: ClassVar[list["RecordedBudget"]] = []

    def __init__(self, total: int) -> None:
        super().__init__(total)
        self.made.append(self)

    @property
    def taken(self) -> int:
        return self.total - self._free


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[servicer.ArtifactServicer]:
    """The servicers made from here on (their writer threads), with RecordedBudgets."""
    made: list[servicer.ArtifactServicer] = []
    init = servicer.ArtifactServicer.__init__

    def recording(self: servicer.ArtifactServicer, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(servicer.ArtifactServicer, "__init__", recording)
    monkeypatch.setattr(budget, "ByteBudget", RecordedBudget)
    RecordedBudget.made.clear()
    return made


@pytest.fixture
async def proxy(s3_config: Config) -> AsyncIterator[CompletionHoldingProxy]:
    host, port = s3_config.s3_endpoint.split(":")
    held = CompletionHoldingProxy(host, int(port))
    await held.start()
    yield held
    held.release.set()
    await held.close()


def _requests(
    project: str, path: str, body: bytes, go: asyncio.Event | None = None
) -> AsyncIterator[api.UploadRequest]:
    """An upload of body, its size announced unless it waits for go (then it reserves
    the memory of an upload of unknown size)."""

    async def sent() -> AsyncIterator[api.UploadRequest]:
        header = api.UploadHeader(project=project, path=path)
        if go is None:
            header.expected_size = len(body)
            header.expected_sha256 = hashlib.sha256(body).hexdigest()
        yield api.UploadRequest(header=header)
        if go is not None:
            await go.wait()
        for start in range(0, len(body), MIB):
            yield api.UploadRequest(chunk=body[start : start + MIB])
        yield api.UploadRequest(finish=api.UploadFinish())

    return sent()


def _absent(s3_config: Config, name: str) -> bool:
    try:
        s3_client(s3_config).stat_object(BUCKET, name)
    except S3Error as error:
        return error.code == "NoSuchKey"
    return False


async def test_a_call_cancelled_during_its_completion_holds_its_writer_to_the_end(
    s3_config: Config,
    pool: asyncpg.Pool,
    proxy: CompletionHoldingProxy,
    recorded: list[servicer.ArtifactServicer],
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call cancelled (its deadline passed, its client left) while S3 completed its
    last write gave back its memory and writer slot at once, and collected its key while
    the writer thread still wrote it: the completion then left a 12 MiB object in S3
    that no upload or garbage row named, and uploads sent again took fresh reservations
    beside the threads still writing."""
    abandoned: list[object] = []
    monkeypatch.setattr(streams.VerifyingReader, "abandon", lambda self: abandoned.append(self))
    async with serving(
        s3_config, pool, ["artifacts"], s3_endpoint=f"127.0.0.1:{proxy.port}"
    ) as port:
        project = await new_project(port, f"cancel-{unique}")
        memory, writers = RecordedBudget.made[-1], recorded[-1]._writers
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = rpc.ArtifactServiceStub(channel).Upload(
                _requests(project, "c/model.bin", os.urandom(SIZE))
            )
            await asyncio.wait_for(proxy.completing.wait(), VERDICT_SECONDS)
            call.cancel()
            # Until the server's call took the cancel: its reader is abandoned, or (as
            # before) what it held is given back.
            await eventually(
                lambda: bool(abandoned) or memory.taken == 0, what="the cancel arrives"
            )
            assert memory.taken > 0
            assert writers._value == threads.UPLOAD_THREADS - 1
            proxy.release.set()
            await eventually(
                lambda: memory.taken == 0 and writers._value == threads.UPLOAD_THREADS,
                what="the writer ends",
            )
        await eventually(lambda: _absent(s3_config, proxy.object_name), what="no object left")
        rows = await pool.fetchval(
            "SELECT count(*) FROM artifacts.uploads WHERE project = $1", project
        )
        assert rows == 0


async def _holding(
    stub: rpc.ArtifactServiceStub, project: str, path: str, go: asyncio.Event
) -> grpc.aio.StreamUnaryCall:
    """An upload let in (its memory and a writer taken) whose chunks wait for go."""
    call = stub.Upload(_requests(project, path, b"held bytes", go))
    verdict = await asyncio.wait_for(call.initial_metadata(), VERDICT_SECONDS)
    assert ("x-cairn-stream", "accepted") in tuple(verdict)
    return call


async def test_an_upload_expired_while_it_waited_is_refused_before_its_bytes(
    s3_config: Config,
    pool: asyncpg.Pool,
    recorded: list[servicer.ArtifactServicer],
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An upload the janitor expired while it waited for its memory was told to send
    its chunks when let in: it sent all 12 MiB, which were written to S3, then was
    refused ABORTED (UPLOAD_EXPIRED), the bytes left there."""
    monkeypatch.setattr(budget, "UPLOAD_BYTES", budget.cost(s3.S3_UNKNOWN_SIZE_PART))
    async with serving(s3_config, pool, ["artifacts"]) as port:
        project = await new_project(port, f"expired-{unique}")
        go = asyncio.Event()
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 * MIB)]
        ) as channel:
            stub = rpc.ArtifactServiceStub(channel)
            holder = await _holding(stub, project, "hold", go)
            waiter = stub.Upload(_requests(project, "w/model.bin", os.urandom(SIZE)))
            await eventually(lambda: RecordedBudget.made[-1].waiting == 1, what="it waits")
            await pool.execute(
                "UPDATE artifacts.uploads SET create_time = create_time - interval '1 day'"
                " WHERE project = $1 AND path = 'w/model.bin'",
                project,
            )
            assert await ObjectStore(pool).expire_uploads(timedelta(hours=1)) == 1
            go.set()
            await holder
            verdict = await asyncio.wait_for(waiter.initial_metadata(), VERDICT_SECONDS)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await waiter
        assert ("x-cairn-stream", "rejected") in tuple(verdict)
        assert refused.value.code() == grpc.StatusCode.ABORTED
        assert "is no longer waiting" in (refused.value.details() or "")
        # The project's own keys alone: tests beside it write to the same bucket.
        backend = s3.S3Backend(s3_config)
        mine = backend._name(f"_objects/{project}/")
        objects = s3_client(s3_config).list_objects(BUCKET, prefix=mine, recursive=True)
        stored = await pool.fetch(
            "SELECT storage_key FROM artifacts.objects WHERE project = $1", project
        )
        assert {o.object_name for o in objects} <= {
            backend._name(row["storage_key"]) for row in stored
        }


@pytest.fixture
async def two_writers_port(
    config: Config,
    pool: asyncpg.Pool,
    recorded: list[servicer.ArtifactServicer],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[int]:
    """A server with two writer threads, past which one upload may wait."""
    monkeypatch.setattr(threads, "UPLOAD_THREADS", 2)
    monkeypatch.setattr(slots, "MAX_WAITING_UPLOADS", 1)
    async with serving(config, pool, ["artifacts"]) as port:
        yield port


def _busy_refusals(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    refusals: list[object] = []
    refuse = slots.uploads_busy

    def counted() -> Any:
        refusals.append(None)
        return refuse()

    monkeypatch.setattr(slots, "uploads_busy", counted)
    return refusals


async def test_an_upload_past_those_that_may_wait_is_refused_at_once(
    two_writers_port: int,
    pool: asyncpg.Pool,
    recorded: list[servicer.ArtifactServicer],
    unique: str,
) -> None:
    """Uploads waiting for a writer were not bounded in number, and gRPC let each take
    4 to 16 MiB of the chunks a client sends before its verdict: 48 of them grew the
    server by 658 MiB."""
    port = two_writers_port
    project = await new_project(port, f"busy-{unique}")
    go = asyncio.Event()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = rpc.ArtifactServiceStub(channel)
        holders = [await _holding(stub, project, f"hold/{n}", go) for n in range(2)]
        waiting = stub.Upload(_requests(project, "waits", b"waiting bytes", go))
        await eventually(lambda: _waiting_for_writers(recorded[-1]) == 1, what="one waits")
        busy = stub.Upload(_requests(project, "busy", b"busy bytes", go))
        verdict = await asyncio.wait_for(busy.initial_metadata(), VERDICT_SECONDS)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await busy
        go.set()
        sizes = [(await call).object.size for call in [*holders, waiting]]
    assert ("x-cairn-stream", "rejected") in tuple(verdict)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert b"UPLOADS_BUSY" in _details(refused.value)
    assert sizes == [10, 10, 13]
    paths = await pool.fetch("SELECT path FROM artifacts.uploads WHERE project = $1", project)
    assert paths == []  # nothing begun for the refused one


def _waiting_for_writers(artifacts: servicer.ArtifactServicer) -> int:
    return len(artifacts._writers._waiters or ())


def _details(error: grpc.aio.AioRpcError) -> bytes:
    """The status details (its ErrorInfo among them) the server's interceptor added."""
    return bytes(dict(error.trailing_metadata() or ()).get("grpc-status-details-bin", b""))


async def test_uploads_refused_as_busy_are_sent_again_by_the_client(
    two_writers_port: int,
    recorded: list[servicer.ArtifactServicer],
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """More uploads at once than writers and those that may wait all complete through
    the client, which sends one refused UPLOADS_BUSY again after a backoff (it raised
    ResourceExhaustedError)."""
    port = two_writers_port
    refusals = _busy_refusals(monkeypatch)
    project = await new_project(port, f"burst-{unique}")
    go = asyncio.Event()
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", port, project=project, timeout=None
        ) as client,
    ):
        stub = rpc.ArtifactServiceStub(channel)
        holders = [await _holding(stub, project, f"hold/{n}", go) for n in range(2)]
        bodies = [b"burst %d" % n for n in range(4)]
        uploads = [
            asyncio.ensure_future(client.upload(f"burst/{n}", body))
            for n, body in enumerate(bodies)
        ]
        # One waits for a writer; the three others are refused, and come again.
        await eventually(lambda: len(refusals) >= 6, what="refusals sent again")
        go.set()
        stored = await asyncio.gather(*uploads)
        await asyncio.gather(*holders)
    assert [info.size for info in stored] == [len(body) for body in bodies]


async def test_batches_refused_as_busy_are_sent_again_by_the_client(
    two_writers_port: int,
    recorded: list[servicer.ArtifactServicer],
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A tree's batches (UploadFiles) take a writer as uploads do, and the client sends
    those refused UPLOADS_BUSY again after a backoff (they failed the tree)."""
    port = two_writers_port
    refusals = _busy_refusals(monkeypatch)
    monkeypatch.setattr(_file_batches, "BATCH_FILES", 2)
    project = await new_project(port, f"batches-{unique}")
    for n in range(8):
        (tmp_path / f"f{n}").write_bytes(b"file %d" % n)
    go = asyncio.Event()
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", port, project=project, timeout=None
        ) as client,
    ):
        stub = rpc.ArtifactServiceStub(channel)
        holders = [await _holding(stub, project, f"hold/{n}", go) for n in range(2)]
        uploading = asyncio.ensure_future(client.upload_tree("tree", tmp_path))
        # One batch waits for a writer; the three others are refused, and come again.
        await eventually(lambda: len(refusals) >= 6, what="refusals sent again")
        go.set()
        stored = await uploading
        await asyncio.gather(*holders)
    assert [info.path for info in stored] == [f"tree/f{n}" for n in range(8)]
