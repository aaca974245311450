"""How completions of direct uploads on S3 end when their caller left, their lease
lapsed, or the server stopped: the verdict reaches the caller's repeat, a completion
never spends an upload another holds, and nothing is left leased."""

import asyncio
import gc
import hashlib
import threading
import weakref
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest

import cairn
from cairn._clients import _direct_transfers
from cairn.artifacts.v1 import artifacts_service_pb2_grpc
from cairn.exceptions import DataLossError
from cairn_server import catalog
from cairn_server.artifacts import completions
from cairn_server.artifacts.s3 import S3Backend
from cairn_server.common import database
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer
from cairn_server.common.service import Resources
from tests.conftest import eventually, new_project, with_overrides
from tests.integration.artifacts.test_completion_leases import DATA, HeldReadBacks, _completion

LEFT = "SELECT count(*) FROM artifacts.uploads WHERE project = $1"
LEASED = "SELECT count(*) FROM artifacts.uploads WHERE project = $1 AND completion IS NOT NULL"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
async def s3_client_of(s3_server_port: int, unique: str) -> AsyncIterator[cairn.ArtifactClient]:
    project = await new_project(s3_server_port, f"le-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", s3_server_port, project=project, timeout=None
    ) as client:
        yield client


@pytest.fixture
def callers(monkeypatch: pytest.MonkeyPatch) -> list[completions.Caller]:
    """The callers of the completions begun, in order."""
    begun: list[completions.Caller] = []

    class Recorded(completions.Caller):
        def __init__(self) -> None:
            super().__init__()
            begun.append(self)

    monkeypatch.setattr(completions, "Caller", Recorded)
    return begun


class ReadBacksInTurn:
    """The n-th read-back (S3Backend.digest) begins, then waits for its own release."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, count: int) -> None:
        self.begun = [threading.Event() for _ in range(count)]
        self.released = [threading.Event() for _ in range(count)]
        self._next = iter(range(count))
        digest = S3Backend.digest

        def held(backend: S3Backend, key: str) -> tuple[str, int]:
            mine = next(self._next)
            self.begun[mine].set()
            self.released[mine].wait(10)
            return digest(backend, key)

        monkeypatch.setattr(S3Backend, "digest", held)

    async def reached(self, n: int) -> bool:
        return await asyncio.to_thread(self.begun[n].wait, 10)


async def _lapse(pool: asyncpg.Pool, project: str) -> None:
    """As when a completion's renewals fail for a whole lease (a partition, say)."""
    await pool.execute(
        """UPDATE artifacts.uploads SET completing_until = clock_timestamp() - interval '1 s'
           WHERE project = $1""",
        project,
    )


async def test_the_verdict_of_a_completion_whose_caller_left_reaches_its_repeat(
    s3_client_of: cairn.ArtifactClient,
    pool: asyncpg.Pool,
    callers: list[completions.Caller],
    monkeypatch: pytest.MonkeyPatch,
):
    """The first attempt's deadline passes during the read-back, which then finds other
    bytes than claimed: the upload is left to the repeat, which is told DATA_LOSS, not
    that no such upload waits."""
    held = HeldReadBacks(monkeypatch)
    request_id = (("x-cairn-request-id", f"verdict-{s3_client_of.project}"),)
    complete = await _completion(s3_client_of, "t/left-verdict.bin")
    complete.sha256 = _sha(b"other bytes than were sent")
    with pytest.raises(grpc.aio.AioRpcError) as left:
        await s3_client_of._stub.CompleteUploadTicket(complete, metadata=request_id, timeout=0.5)
    assert left.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await held.reached(1)
    await eventually(lambda: not callers[0].waiting, what="the service seeing its caller leave")
    held.released.set()
    monkeypatch.setattr(_direct_transfers, "BEING_COMPLETED_POLL_SECONDS", 0.01)
    with pytest.raises(DataLossError) as judged:
        await s3_client_of._direct._complete_upload(complete, 10, request_id)
    assert judged.value.reason == "CHECKSUM_MISMATCH"
    assert await pool.fetchval(LEFT, s3_client_of.project) == 0  # spent by the repeat


async def test_a_lapsed_completions_verdict_leaves_the_upload_to_its_new_holder(
    s3_client_of: cairn.ArtifactClient, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
):
    """A wrong claim whose lease lapsed while it read back: it is told its verdict, and
    neither the row nor the multipart upload of the lease's new holder is touched."""
    reads = ReadBacksInTurn(monkeypatch, 2)
    right = await _completion(s3_client_of, "t/two-holders.bin")
    wrong = api_copy(right, sha256=_sha(b"not these bytes"))
    stale = asyncio.ensure_future(s3_client_of._stub.CompleteUploadTicket(wrong))
    assert await reads.reached(0)
    await _lapse(pool, s3_client_of.project)
    holder = asyncio.ensure_future(s3_client_of._stub.CompleteUploadTicket(right))
    assert await reads.reached(1)
    reads.released[0].set()
    with pytest.raises(grpc.aio.AioRpcError) as judged:
        await stale
    assert judged.value.code() == grpc.StatusCode.DATA_LOSS
    assert await pool.fetchval(LEASED, s3_client_of.project) == 1  # the holder's, kept
    reads.released[1].set()
    assert (await holder).object.sha256 == _sha(DATA)


async def test_a_lapsed_completion_answers_the_object_its_request_id_published(
    s3_client_of: cairn.ArtifactClient, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
):
    """Its lease lapsed and a repeat of the call (another replica, say) took it over
    and published: the first finds the upload gone, and answers that object rather
    than UPLOAD_EXPIRED."""
    reads = ReadBacksInTurn(monkeypatch, 2)
    request_id = (("x-cairn-request-id", f"lapsed-{s3_client_of.project}"),)
    complete = await _completion(s3_client_of, "t/taken-over.bin")
    first = asyncio.ensure_future(
        s3_client_of._stub.CompleteUploadTicket(complete, metadata=request_id)
    )
    assert await reads.reached(0)
    await _lapse(pool, s3_client_of.project)
    repeat = asyncio.ensure_future(
        s3_client_of._stub.CompleteUploadTicket(complete, metadata=request_id)
    )
    assert await reads.reached(1)
    reads.released[1].set()
    published = (await repeat).object
    reads.released[0].set()
    assert (await first).object == published


async def test_a_completion_cut_by_the_shutdown_leaves_its_upload_free(
    s3_config: Config, pool: asyncpg.Pool, unique: str, monkeypatch: pytest.MonkeyPatch
):
    """Read-backs outlive the grace period, one whose caller left and one whose caller
    waits: the server cancels both before its pool closes, which releases their leases
    (the uploads can be completed at once elsewhere rather than after the leases
    expire), and tells the caller waiting to call again. The grace is stop()'s, not
    the setting's (longer than the read-backs are held)."""
    held = HeldReadBacks(monkeypatch)
    settings = with_overrides(
        s3_config, artifact_janitor_interval_seconds=0, shutdown_grace_seconds=60
    )
    own = await database.create_pool(settings.database_url, settings)
    server = CairnServer(settings, catalog.select(["artifacts"]), own)
    try:
        port = await server.start()
        project = await new_project(port, f"sd-{unique}")
        async with cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", port, project=project, timeout=None
        ) as client:
            complete = await _completion(client, "t/shutdown.bin")
            with pytest.raises(grpc.aio.AioRpcError):
                await client._stub.CompleteUploadTicket(complete, timeout=0.5)
            # Its answer is the server's own, not the channel's after sending it again.
            once = grpc.aio.insecure_channel(
                f"127.0.0.1:{port}", options=[("grpc.enable_retries", 0)]
            )
            waiting = asyncio.ensure_future(
                artifacts_service_pb2_grpc.ArtifactServiceStub(once).CompleteUploadTicket(
                    await _completion(client, "t/waits.bin")
                )
            )
            assert await held.reached(2)
            assert await pool.fetchval(LEASED, project) == 2
            await server.stop(grace=1.0)
            with pytest.raises(grpc.aio.AioRpcError) as cut:
                await waiting
            await once.close()
        assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "SHUTTING_DOWN" in str(cut.value.trailing_metadata())
        assert await pool.fetchval(LEASED, project) == 0
        assert await pool.fetchval(LEFT, project) == 2  # left to be completed again
    finally:
        held.released.set()
        await database.close_pool(own)


def test_a_servers_completions_go_with_it(s3_config: Config) -> None:
    resources = Resources(config=s3_config, pool=None, idempotency=None)  # type: ignore[arg-type]
    kept = weakref.ref(completions.of(resources))
    del resources
    gc.collect()
    assert kept() is None


def api_copy(request: Any, **changes: Any) -> Any:
    copied = type(request)()
    copied.CopyFrom(request)
    for name, value in changes.items():
        setattr(copied, name, value)
    return copied
