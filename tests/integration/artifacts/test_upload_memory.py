"""What a streamed upload to S3 holds in memory: one part buffer (s3.PartBuffer), and a
share of the memory budget of such uploads (budget.py) reserved before it is accepted."""

import asyncio
import tracemalloc
from collections.abc import AsyncIterator
from typing import ClassVar

import asyncpg
import grpc
import pytest

from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.artifacts.v1 import artifacts_service_pb2_grpc as rpc
from cairn_server import catalog
from cairn_server.artifacts import budget, s3
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer
from tests.conftest import BUCKET, eventually, new_project, s3_client

MIB = 1024 * 1024
READ = MIB
VERDICT_SECONDS = 30.0  # an upload not let in waits for ever: fail instead


class TracedSource:
    """14 MiB in fresh 1 MiB reads; at each read, the traced memory that the write
    holds (allocated under s3.py: moto's own, in its server's threads, is left out)."""

    def __init__(self) -> None:
        self.left = 14 * MIB
        self.most_held = 0

    def read(self, n: int = -1) -> bytes:
        data = bytes([self.left % 251]) * min(n, READ, self.left)
        self.left -= len(data)
        held = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, s3.__file__, all_frames=True)]
        )
        self.most_held = max(self.most_held, sum(t.size for t in held.traces))
        return data


async def test_a_streamed_s3_write_holds_one_part(s3_config: Config, unique: str) -> None:
    """A write of 3 parts (5, 5 and 4 MiB) holds one part buffer and a read's bytes.
    Through the SDK's put_object it held about three parts: each read's bytes added to
    the part (a copy), the part cut from the byte read past it (another), and the part
    sent before still referenced while the next was read."""
    backend = s3.S3Backend(s3_config)
    source = TracedSource()
    tracemalloc.start(40)
    try:
        await asyncio.to_thread(backend.write, f"memory/{unique}", source, "x/y", 14 * MIB)
    finally:
        tracemalloc.stop()
    stored = s3_client(s3_config).stat_object(BUCKET, backend._name(f"memory/{unique}"))
    assert stored.size == 14 * MIB and (stored.etag or "").endswith("-3")
    assert source.most_held < 5 * MIB * 1.3 + 2 * READ, source.most_held


class RecordedBudget(budget.ByteBudget):
    made: ClassVar[list[budget.ByteBudget]] = []

    def __init__(self, total: int) -> None:
        super().__init__(total)
        self.made.append(self)


@pytest.fixture
async def budgeted_port(
    s3_config: Config, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[int]:
    """A server on S3 whose upload memory holds two uploads of unknown size (8 MiB parts)."""
    monkeypatch.setattr(budget, "UPLOAD_BYTES", 2 * budget.cost(s3.S3_UNKNOWN_SIZE_PART))
    monkeypatch.setattr(budget, "ByteBudget", RecordedBudget)
    RecordedBudget.made.clear()
    server = CairnServer(s3_config, catalog.select(["artifacts"]), pool)
    port = await server.start()
    yield port
    await server.stop(grace=1.0)


async def test_uploads_past_the_memory_budget_wait_for_their_verdict(
    budgeted_port: int, unique: str
) -> None:
    """Every streamed upload to S3 was accepted up to 64 writers at once, each holding
    about 100 MiB: 40 held more than the Kubernetes base's 4 GiB."""
    port = budgeted_port
    project = await new_project(port, f"mem-{unique}")
    ends = [asyncio.Event() for _ in range(3)]

    def requests(n: int) -> AsyncIterator[api.UploadRequest]:
        async def sent() -> AsyncIterator[api.UploadRequest]:
            yield api.UploadRequest(header=api.UploadHeader(project=project, path=f"u/{n}"))
            await ends[n].wait()
            yield api.UploadRequest(chunk=b"bytes %d" % n)
            yield api.UploadRequest(finish=api.UploadFinish())

        return sent()

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = rpc.ArtifactServiceStub(channel)
        calls = [stub.Upload(requests(n)) for n in range(2)]
        for call in calls:
            assert ("x-cairn-stream", "accepted") in tuple(await call.initial_metadata())
        calls.append(stub.Upload(requests(2)))
        await eventually(
            lambda: [b.waiting for b in RecordedBudget.made] == [1], what="the third upload waits"
        )
        verdict = asyncio.ensure_future(calls[2].initial_metadata())
        ends[0].set()
        assert (await calls[0]).object.size == len(b"bytes 0")
        assert ("x-cairn-stream", "accepted") in tuple(await verdict)
        ends[1].set()
        ends[2].set()
        sizes = [(await call).object.size for call in calls[1:]]
    assert sizes == [7, 7]


async def test_small_uploads_are_held_to_what_they_announced(
    budgeted_port: int, unique: str
) -> None:
    """An upload that announced a few bytes reserved what an upload of a whole part
    holds (77 MiB for a byte): on the default budget 39 such uploads let nothing else
    in. Four here fit a budget that holds two uploads of unknown size."""
    project = await new_project(budgeted_port, f"small-{unique}")
    go = asyncio.Event()

    async def sent(n: int) -> AsyncIterator[api.UploadRequest]:
        header = api.UploadHeader(project=project, path=f"small/{n}", expected_size=7)
        yield api.UploadRequest(header=header)
        await go.wait()
        yield api.UploadRequest(chunk=b"bytes %d" % n)
        yield api.UploadRequest(finish=api.UploadFinish())

    async with grpc.aio.insecure_channel(f"127.0.0.1:{budgeted_port}") as channel:
        stub = rpc.ArtifactServiceStub(channel)
        calls = [stub.Upload(sent(n)) for n in range(4)]
        for call in calls:  # each accepted while all the others wait for go
            verdict = await asyncio.wait_for(call.initial_metadata(), VERDICT_SECONDS)
            assert ("x-cairn-stream", "accepted") in tuple(verdict)
        go.set()
        assert [(await call).object.size for call in calls] == [7] * 4
