"""What completions of direct uploads on S3 hold, and for how long: no database
connection while they read objects back, at most CAIRN_ARTIFACT_MAX_COMPLETIONS of them
at once, a lease on the upload that lapses when its holder dies; and AbortUploadTicket,
which gives an upload up."""

import asyncio
import hashlib
import threading
import urllib.request
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from prometheus_client import REGISTRY

import cairn
from cairn._clients import _direct_transfers, _presigned
from cairn._headers import with_id
from cairn._transport import Transport
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.exceptions import (
    AbortedError,
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from cairn_server import catalog
from cairn_server.artifacts import leases, presigned_urls
from cairn_server.artifacts.leases import CompletionSlots
from cairn_server.artifacts.presigned import PresignedTransfers
from cairn_server.artifacts.s3 import S3Backend, unavailable
from cairn_server.artifacts.store import ObjectStore
from cairn_server.common import database
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer
from tests.conftest import BUCKET, eventually, new_project, s3_client, with_overrides
from tests.proxy import AnswerDroppingProxy

POOL_SIZE = 2
COMPLETIONS = POOL_SIZE + 1  # the cap of the server below: more than its pool
DATA = b"one small part" * 100


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
async def small_pool(
    s3_config: Config, pool: asyncpg.Pool, unique: str
) -> AsyncIterator[cairn.ArtifactClient]:
    """A client of an S3 server whose pool has POOL_SIZE connections, a wait for one of
    a second, and which completes COMPLETIONS uploads at once (the session's `pool`
    migrated the database)."""
    settings = with_overrides(
        s3_config,
        db_pool_min_size=1,
        db_pool_size=POOL_SIZE,
        db_acquire_timeout_seconds=1.0,
        artifact_max_completions=COMPLETIONS,
        artifact_janitor_interval_seconds=0,
    )
    pool = await database.create_pool(settings.database_url, settings)
    server = CairnServer(settings, catalog.select(["artifacts"]), pool)
    port = await server.start()
    try:
        project = await new_project(port, f"lp-{unique}")
        async with cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", port, project=project, timeout=None
        ) as client:
            yield client
    finally:
        await server.stop(grace=1.0)
        await database.close_pool(pool)


@pytest.fixture
async def s3_client_of(s3_server_port: int, unique: str) -> AsyncIterator[cairn.ArtifactClient]:
    project = await new_project(s3_server_port, f"lq-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", s3_server_port, project=project, timeout=None
    ) as client:
        client.direct_threshold = 1
        yield client


class HeldReadBacks:
    """Read-backs (S3Backend.digest) held until released, counted as they begin."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.released = threading.Event()
        self._begun = 0
        self._changed = threading.Condition()
        digest = S3Backend.digest

        def held(backend: S3Backend, key: str) -> tuple[str, int]:
            with self._changed:
                self._begun += 1
                self._changed.notify_all()
            self.released.wait(10)
            return digest(backend, key)

        monkeypatch.setattr(S3Backend, "digest", held)

    @property
    def begun(self) -> int:
        with self._changed:
            return self._begun

    async def reached(self, count: int) -> bool:
        def wait() -> bool:
            with self._changed:
                return self._changed.wait_for(lambda: self._begun >= count, timeout=10)

        return await asyncio.to_thread(wait)


async def _completion(client: cairn.ArtifactClient, path: str) -> api.CompleteUploadTicketRequest:
    header = api.UploadHeader(project=client.project, path=path, expected_size=len(DATA))
    reply = await client._stub.CreateUploadTicket(
        api.CreateUploadTicketRequest(header=header, accept_presigned=True)
    )
    parts = reply.parts
    etags, _ = await asyncio.to_thread(
        _presigned.upload_source, DATA, len(DATA), parts.part_size, parts.part_urls, print
    )
    return api.CompleteUploadTicketRequest(
        project=client.project,
        path=path,
        upload=parts.upload,
        etags=etags,
        size=len(DATA),
        sha256=_sha(DATA),
    )


def _abort_of(complete: api.CompleteUploadTicketRequest) -> api.AbortUploadTicketRequest:
    return api.AbortUploadTicketRequest(
        project=complete.project, path=complete.path, upload=complete.upload
    )


async def test_completions_reading_back_hold_no_pool_connection(
    small_pool: cairn.ArtifactClient, monkeypatch: pytest.MonkeyPatch
):
    """More completions than the pool has connections, all reading back at once: the
    service still answers other calls from its pool, and each completion publishes."""
    held = HeldReadBacks(monkeypatch)
    requests = [await _completion(small_pool, f"t/{n}.bin") for n in range(COMPLETIONS)]
    running = [asyncio.ensure_future(small_pool._stub.CompleteUploadTicket(r)) for r in requests]
    assert await held.reached(COMPLETIONS)
    assert len(await small_pool.list("t/")) == 0  # answered from the pool meanwhile
    held.released.set()
    published = [(await completion).object for completion in running]
    assert {o.sha256 for o in published} == {_sha(DATA)}
    assert len(await small_pool.list("t/")) == COMPLETIONS


async def _cap_filled(
    store: cairn.ArtifactClient, monkeypatch: pytest.MonkeyPatch, folder: str
) -> tuple[HeldReadBacks, list[Any], Any]:
    """COMPLETIONS completions reading back (held), their calls, and the request of one
    more, not yet sent."""
    held = HeldReadBacks(monkeypatch)
    requests = [await _completion(store, f"{folder}/{n}.bin") for n in range(COMPLETIONS + 1)]
    running = [asyncio.ensure_future(store._stub.CompleteUploadTicket(r)) for r in requests[:-1]]
    assert await held.reached(COMPLETIONS)
    return held, running, requests[-1]


async def test_a_completion_past_the_cap_gets_a_slot_freed_within_its_wait(
    small_pool: cairn.ArtifactClient, monkeypatch: pytest.MonkeyPatch
):
    """As a client from before COMPLETIONS_BUSY needs (it fails its upload on it): one
    past the cap waits for a slot, and completes once one frees."""
    monkeypatch.setattr(leases, "SLOT_WAIT", timedelta(seconds=30))
    held, running, past = await _cap_filled(small_pool, monkeypatch, "w")
    full = asyncio.Event()
    taken = CompletionSlots.taken

    def noted(slots: CompletionSlots) -> Any:
        if slots.running >= slots.limit:
            full.set()  # it waits for a slot from here on, before yielding to the loop
        return taken(slots)

    monkeypatch.setattr(CompletionSlots, "taken", noted)
    # The channel sends nothing again on RESOURCE_EXHAUSTED: the answer is the server's.
    past = asyncio.ensure_future(small_pool._stub.CompleteUploadTicket(past))
    await full.wait()
    held.released.set()
    assert (await past).object.sha256 == _sha(DATA)
    assert {(await r).object.sha256 for r in running} == {_sha(DATA)}


async def test_a_completion_past_the_cap_is_refused_and_the_client_waits_it_out(
    small_pool: cairn.ArtifactClient, monkeypatch: pytest.MonkeyPatch
):
    """Still no slot once its wait is over: it is refused, and the client calls again."""
    monkeypatch.setattr(leases, "SLOT_WAIT", timedelta(seconds=0.05))
    held, running, past = await _cap_filled(small_pool, monkeypatch, "c")
    with pytest.raises(ResourceExhaustedError) as refused:
        await small_pool._transport.unary(
            small_pool._stub.CompleteUploadTicket, past, timeout=10, metadata=None
        )
    assert refused.value.reason == "COMPLETIONS_BUSY"
    # The client calls again after a backoff; the cap frees once the others end.
    refusals = 0
    taken = CompletionSlots.taken

    def counted(slots: CompletionSlots) -> Any:
        nonlocal refusals
        if slots.running >= slots.limit:
            refusals += 1
            if refusals == 2:
                held.released.set()
        return taken(slots)

    monkeypatch.setattr(CompletionSlots, "taken", counted)
    monkeypatch.setattr(_direct_transfers, "BUSY_BACKOFF_SECONDS", (0.01, 0.05))
    waited = await small_pool._direct._complete_upload(past, 10, with_id(None))
    assert waited.sha256 == _sha(DATA) and refusals >= 2
    assert {(await r).object.sha256 for r in running} == {_sha(DATA)}


async def _put_through_url(client: cairn.ArtifactClient, path: str) -> str:
    """A presigned PUT URL's upload of DATA, sent; its upload id, for ConfirmUpload."""
    put = await client.presigned_url(path, "PUT", content_type="application/octet-stream")
    request = urllib.request.Request(put.url, data=DATA, method="PUT", headers=put.headers)
    await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=10).close())
    return put.upload_id


async def test_confirmations_read_back_within_the_completions_cap(
    small_pool: cairn.ArtifactClient, monkeypatch: pytest.MonkeyPatch
):
    """A ConfirmUpload reads its object back as a completion does, on a store thread
    other calls need: any number of them read back at once, so editors confirming
    could take every store thread from everyone's downloads."""
    monkeypatch.setattr(leases, "SLOT_WAIT", timedelta(seconds=0.05))
    held = HeldReadBacks(monkeypatch)
    uploads = [await _put_through_url(small_pool, f"p/{n}.bin") for n in range(COMPLETIONS + 1)]
    running = [
        asyncio.ensure_future(small_pool.confirm_upload(f"p/{n}.bin", upload_id=upload))
        for n, upload in enumerate(uploads[:-1])
    ]
    assert await held.reached(COMPLETIONS)
    with pytest.raises(ResourceExhaustedError) as refused:
        await small_pool._transport.unary(
            small_pool._stub.ConfirmUpload,
            api.ConfirmUploadRequest(
                project=small_pool.project, path=f"p/{COMPLETIONS}.bin", upload_id=uploads[-1]
            ),
            timeout=10,
            metadata=None,
        )
    assert refused.value.reason == "COMPLETIONS_BUSY"
    held.released.set()
    assert {(await r).sha256 for r in running} == {_sha(DATA)}
    # Refused before it read anything back: the upload waits to be confirmed again.
    again = await small_pool.confirm_upload(f"p/{COMPLETIONS}.bin", upload_id=uploads[-1])
    assert again.sha256 == _sha(DATA)


def _confirmations_ended() -> float:
    """ConfirmUpload calls this process has answered or seen cut, whatever their code."""
    method = "/cairn.artifacts.v1.ArtifactService/ConfirmUpload"
    return sum(
        sample.value
        for family in REGISTRY.collect()
        if family.name == "cairn_rpc_calls"
        for sample in family.samples
        if sample.name == "cairn_rpc_calls_total" and sample.labels["method"] == method
    )


async def test_a_confirmation_whose_caller_left_keeps_its_place_in_the_cap(
    small_pool: cairn.ArtifactClient, monkeypatch: pytest.MonkeyPatch
):
    """Its read-back's thread cannot be stopped: a caller whose deadline passed freed
    the slot while the read-back ran on, so confirmations given up again and again each
    started one more, past the cap."""
    monkeypatch.setattr(leases, "SLOT_WAIT", timedelta(seconds=0.05))
    held = HeldReadBacks(monkeypatch)
    uploads = [await _put_through_url(small_pool, f"g/{n}.bin") for n in range(COMPLETIONS + 1)]
    ended = _confirmations_ended()
    given_up = [
        asyncio.ensure_future(
            small_pool.confirm_upload(f"g/{n}.bin", upload_id=upload, timeout=0.5)
        )
        for n, upload in enumerate(uploads[:-1])
    ]
    assert await held.reached(COMPLETIONS)
    for call in given_up:
        with pytest.raises(DeadlineExceededError):
            await call
    await eventually(
        lambda: _confirmations_ended() >= ended + COMPLETIONS, what="the calls ended there"
    )
    with pytest.raises(ResourceExhaustedError) as refused:  # the read-backs hold the cap
        await small_pool.confirm_upload(f"g/{COMPLETIONS}.bin", upload_id=uploads[-1], timeout=5)
    assert refused.value.reason == "COMPLETIONS_BUSY"
    held.released.set()

    async def published() -> bool:
        listed = await small_pool.list("g/")
        return len(listed) == COMPLETIONS

    await eventually(published, what="the given-up confirmations published")


async def test_a_repeated_confirmation_waits_for_the_read_back_under_way(
    small_pool: cairn.ArtifactClient, monkeypatch: pytest.MonkeyPatch
):
    """Its first attempt's caller left while it read back: the repeat started a second
    read-back of the same upload, up to 5 GiB again and another slot of the cap, so a
    client retrying on short deadlines filled the cap with copies of one upload."""
    held = HeldReadBacks(monkeypatch)
    arrived = 0
    upload_of = presigned_urls.upload_id_field

    def counted(text: str) -> Any:  # the first thing a confirmation reads of its request
        nonlocal arrived
        arrived += 1
        return upload_of(text)

    monkeypatch.setattr(presigned_urls, "upload_id_field", counted)
    upload = await _put_through_url(small_pool, "r/once.bin")
    once = [("x-cairn-request-id", f"confirm-{small_pool.project}")]
    with pytest.raises(DeadlineExceededError):
        await small_pool.confirm_upload("r/once.bin", upload_id=upload, timeout=0.5, metadata=once)
    assert await held.reached(1)
    repeat = asyncio.ensure_future(
        small_pool.confirm_upload("r/once.bin", upload_id=upload, timeout=30, metadata=once)
    )
    await eventually(lambda: arrived >= 2, what="the repeat arrived")
    held.released.set()
    assert (await repeat).sha256 == _sha(DATA)
    assert held.begun == 1  # one read-back for both


async def test_a_lease_is_renewed_while_its_completion_reads_back(
    s3_client_of: cairn.ArtifactClient, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(leases, "LEASE", timedelta(seconds=1))
    monkeypatch.setattr(leases, "RENEW_EVERY", timedelta(seconds=0.1))
    held = HeldReadBacks(monkeypatch)
    complete = await _completion(s3_client_of, "t/renewed.bin")
    first = asyncio.ensure_future(s3_client_of._stub.CompleteUploadTicket(complete))
    assert await held.reached(1)
    until = "SELECT completing_until, create_time FROM artifacts.uploads WHERE project = $1"
    taken = await pool.fetchrow(until, s3_client_of.project)

    async def renewed_past_its_first_length() -> bool:
        now = await pool.fetchrow(until, s3_client_of.project)
        return bool(now["completing_until"] > taken["completing_until"] + timedelta(seconds=1))

    await eventually(renewed_past_its_first_length, what="a renewal past the first lease")
    with pytest.raises(AbortedError) as refused:  # the lease did not lapse
        await s3_client_of._transport.unary(
            s3_client_of._stub.CompleteUploadTicket, complete, timeout=10, metadata=None
        )
    assert refused.value.reason == "UPLOAD_BEING_COMPLETED"
    held.released.set()
    assert (await first).object.sha256 == _sha(DATA)


async def test_a_renewal_after_the_completion_published_cancels_nothing(
    s3_client_of: cairn.ArtifactClient, monkeypatch: pytest.MonkeyPatch
):
    """Publishing removes the upload's row, so a renewal landing after it found no
    lease and took it for one another completion took over: it cancelled its holder,
    whose caller heard ABORTED (UPLOAD_BEING_COMPLETED) for an upload it published,
    and whose replaced bytes were left to the janitor."""
    monkeypatch.setattr(leases, "RENEW_EVERY", timedelta(seconds=0.01))
    renewals = RenewalConnections(monkeypatch)
    publish = ObjectStore.publish

    async def renewed_after(store: ObjectStore, *args: Any, **kwargs: Any) -> Any:
        published = await publish(store, *args, **kwargs)
        begun = renewals.taken
        # A renewal that took its connection after the publication and gave it back,
        # or renewals ended (they end as they find the upload gone).
        await eventually(
            lambda: renewals.given_back > begun or renewals.ended(), what="a later renewal"
        )
        return published

    monkeypatch.setattr(ObjectStore, "publish", renewed_after)
    complete = await _completion(s3_client_of, "t/published.bin")
    reply = await s3_client_of._stub.CompleteUploadTicket(complete)
    assert reply.object.sha256 == _sha(DATA)


class RenewalConnections:
    """Counts the pool connections lease renewals take, and give back."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.taken = self.given_back = 0
        self.renewing: set[asyncio.Task[Any]] = set()
        acquire = database.BoundedPool.acquire
        counts = self

        class Counted:
            def __init__(self, inner: Any) -> None:
                self._inner = inner

            async def __aenter__(self) -> Any:
                counts.taken += 1
                return await self._inner.__aenter__()

            async def __aexit__(self, *exc_info: Any) -> None:
                await self._inner.__aexit__(*exc_info)
                counts.given_back += 1

        def counted(pool: database.BoundedPool, **kwargs: Any) -> Any:
            inner = acquire(pool, **kwargs)
            task = asyncio.current_task()
            coroutine = getattr(task.get_coro() if task else None, "__qualname__", "")
            if task is None or not coroutine.endswith("._renew"):
                return inner
            counts.renewing.add(task)
            return Counted(inner)

        monkeypatch.setattr(database.BoundedPool, "acquire", counted)

    def ended(self) -> bool:
        """Whether every renewal that took a connection has ended."""
        return bool(self.renewing) and all(task.done() for task in self.renewing)


async def test_a_completion_whose_caller_left_runs_to_its_end_holding_the_upload(
    small_pool: cairn.ArtifactClient, monkeypatch: pytest.MonkeyPatch
):
    """Its deadline passed during the read-back: the read-back's thread cannot be
    stopped, so the completion keeps its lease and its slot until it ends, and
    publishes; its repeat waits, then answers the object."""
    held = HeldReadBacks(monkeypatch)
    request_id = (("x-cairn-request-id", f"left-{small_pool.project}"),)
    complete = await _completion(small_pool, "t/left.bin")
    with pytest.raises(grpc.aio.AioRpcError) as left:
        await small_pool._stub.CompleteUploadTicket(complete, metadata=request_id, timeout=0.5)
    assert left.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await held.reached(1)
    with pytest.raises(AbortedError) as refused:
        await small_pool._transport.unary(
            small_pool._stub.CompleteUploadTicket, complete, timeout=10, metadata=request_id
        )
    assert refused.value.reason == "UPLOAD_BEING_COMPLETED"
    held.released.set()
    monkeypatch.setattr(_direct_transfers, "BEING_COMPLETED_POLL_SECONDS", 0.01)
    again = await small_pool._direct._complete_upload(complete, 10, request_id)
    assert again.sha256 == _sha(DATA)


async def test_a_lease_its_holder_left_is_taken_over_once_it_expired(
    s3_client_of: cairn.ArtifactClient, pool: asyncpg.Pool
):
    """As a completion whose process died leaves its upload: leased, never renewed."""
    complete = await _completion(s3_client_of, "t/orphan.bin")
    await pool.execute(
        """UPDATE artifacts.uploads SET completion = gen_random_uuid(),
               completing_until = clock_timestamp() + interval '1 hour'
           WHERE project = $1""",
        s3_client_of.project,
    )
    for call, request in (
        (s3_client_of._stub.CompleteUploadTicket, complete),
        (s3_client_of._stub.AbortUploadTicket, _abort_of(complete)),
    ):
        with pytest.raises(AbortedError) as held:
            await s3_client_of._transport.unary(call, request, timeout=10, metadata=None)
        assert held.value.reason == "UPLOAD_BEING_COMPLETED"
    await pool.execute(  # the hour passed
        """UPDATE artifacts.uploads SET completing_until = clock_timestamp() - interval '1 s'
           WHERE project = $1""",
        s3_client_of.project,
    )
    reply = await s3_client_of._stub.CompleteUploadTicket(complete)
    assert reply.object.sha256 == _sha(DATA)


async def test_a_completion_whose_lease_lapsed_to_another_publishes_nothing(
    s3_client_of: cairn.ArtifactClient, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
):
    """Its renewals failed, say: the lease's new holder alone publishes, and the first
    leaves the upload to it (ABORTED, not a verdict that would spend the upload)."""
    held = HeldReadBacks(monkeypatch)
    complete = await _completion(s3_client_of, "t/lapsed.bin")
    first = asyncio.ensure_future(s3_client_of._stub.CompleteUploadTicket(complete))
    assert await held.reached(1)
    await pool.execute(  # another completion took the lease after it lapsed
        "UPDATE artifacts.uploads SET completion = gen_random_uuid() WHERE project = $1",
        s3_client_of.project,
    )
    held.released.set()
    with pytest.raises(grpc.aio.AioRpcError) as lost:
        await first
    assert lost.value.code() == grpc.StatusCode.ABORTED
    assert "UPLOAD_BEING_COMPLETED" in str(lost.value.trailing_metadata())
    left = "SELECT count(*) FROM artifacts.uploads WHERE project = $1"
    assert await pool.fetchval(left, s3_client_of.project) == 1  # not spent
    with pytest.raises(NotFoundError):
        await s3_client_of.stat("t/lapsed.bin")


@pytest.mark.parametrize("taker", ["completing", "published"])
async def test_a_completion_that_finds_its_lease_lost_stops_at_once(
    s3_client_of: cairn.ArtifactClient,
    pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
    taker: str,
):
    """It can no longer publish: its renewal cancels it rather than let it read the
    object back to its end holding a slot; it answers while the read-back still runs.
    Whether the completion that took the lease still runs or has published (the upload
    gone, as after the first's own publication, which it was taken for)."""
    monkeypatch.setattr(leases, "RENEW_EVERY", timedelta(seconds=0.05))
    held = HeldReadBacks(monkeypatch)
    read_back, reading = threading.Event(), S3Backend.digest

    def noted(backend: S3Backend, key: str) -> tuple[str, int]:
        try:
            return reading(backend, key)
        finally:
            read_back.set()

    monkeypatch.setattr(S3Backend, "digest", noted)
    complete = await _completion(s3_client_of, "t/lost.bin")
    first = asyncio.ensure_future(s3_client_of._stub.CompleteUploadTicket(complete))
    try:
        assert await held.reached(1)
        await pool.execute(  # another completion took the lease after it lapsed
            "UPDATE artifacts.uploads SET completion = gen_random_uuid() WHERE project = $1",
            s3_client_of.project,
        )
        if taker == "published":
            await pool.execute(
                "DELETE FROM artifacts.uploads WHERE project = $1", s3_client_of.project
            )
        with pytest.raises(grpc.aio.AioRpcError) as lost:
            await first
        assert not read_back.is_set()
    finally:
        held.released.set()
    assert lost.value.code() == grpc.StatusCode.ABORTED
    assert "UPLOAD_BEING_COMPLETED" in str(lost.value.trailing_metadata())


async def test_a_repeat_that_finds_its_upload_just_published_answers_the_object(
    s3_client_of: cairn.ArtifactClient, monkeypatch: pytest.MonkeyPatch
):
    """The repeat checked for a published object before the first attempt published,
    and looked for the upload after: no lease holds it then, for it is gone."""
    request_id = (("x-cairn-request-id", f"just-{s3_client_of.project}"),)
    complete = await _completion(s3_client_of, "t/just.bin")
    first = await s3_client_of._stub.CompleteUploadTicket(complete, metadata=request_id)
    published_by, checks = ObjectStore.published_by, []

    async def too_early(self: ObjectStore, *args: Any) -> Any:
        checks.append(args)
        return None if len(checks) == 1 else await published_by(self, *args)

    monkeypatch.setattr(ObjectStore, "published_by", too_early)
    again = await s3_client_of._stub.CompleteUploadTicket(complete, metadata=request_id)
    assert again.object == first.object and len(checks) == 2


def _left_in_store(s3_config: Config, project: str) -> list[str]:
    client, prefix = s3_client(s3_config), f"store/_objects/{project}/"
    found = [o.object_name for o in client.list_objects(BUCKET, prefix=prefix, recursive=True)]
    uploads = client._list_multipart_uploads(BUCKET, prefix=prefix).uploads
    return found + [f"multipart:{u.object_name}" for u in uploads]


async def test_an_aborted_upload_is_spent_and_leaves_nothing_in_the_store(
    s3_client_of: cairn.ArtifactClient, s3_config: Config
):
    complete = await _completion(s3_client_of, "t/aborted.bin")
    assert len(_left_in_store(s3_config, s3_client_of.project)) == 1  # its parts
    await s3_client_of._stub.AbortUploadTicket(_abort_of(complete))
    assert _left_in_store(s3_config, s3_client_of.project) == []
    with pytest.raises(NotFoundError) as spent:
        await s3_client_of._transport.unary(
            s3_client_of._stub.CompleteUploadTicket, complete, timeout=10, metadata=None
        )
    assert spent.value.reason == "UPLOAD_NOT_FOUND"
    await s3_client_of._stub.AbortUploadTicket(_abort_of(complete))  # again: OK
    # An upload that published is not waiting any more: aborting it leaves the object.
    published = await _completion(s3_client_of, "t/published.bin")
    await s3_client_of._stub.CompleteUploadTicket(published)
    await s3_client_of._stub.AbortUploadTicket(_abort_of(published))
    assert (await s3_client_of.stat("t/published.bin")).sha256 == _sha(DATA)


def _misspelt(upload: str) -> list[str]:
    """Spellings of upload that uuid.UUID reads: as another upload (a space or "+"
    before it, "_" within), or as the same one (braces, a urn, Arabic-Indic digits)."""
    arabic = "".join(chr(0x660 + int(c)) if c.isdigit() else c for c in upload)
    return [
        " " + upload[1:],
        "+" + upload[1:],
        f"{upload[:4]}_{upload[5:]}",
        "{" + upload + "}",
        f"urn:uuid:{upload}",
        arabic,
    ]


async def test_an_upload_named_by_a_misspelt_id_is_refused_and_left_waiting(
    s3_client_of: cairn.ArtifactClient,
):
    """Aborting " 501a..." answered OK and aborted nothing (another id), and an id in
    Arabic-Indic digits aborted the upload: one id had many spellings, and a mistyped
    one named another."""
    complete = await _completion(s3_client_of, "t/misspelt.bin")
    for upload in _misspelt(complete.upload):
        abort = api.AbortUploadTicketRequest(
            project=complete.project, path=complete.path, upload=upload
        )
        with pytest.raises(InvalidArgumentError) as refused:
            await s3_client_of._transport.unary(
                s3_client_of._stub.AbortUploadTicket, abort, timeout=10, metadata=None
            )
        assert [field for field, _ in refused.value.field_violations] == ["upload"], upload
    await s3_client_of._stub.CompleteUploadTicket(complete)  # still waiting: published
    assert (await s3_client_of.stat("t/misspelt.bin")).sha256 == _sha(DATA)


async def test_the_client_gives_up_an_upload_it_cancelled(
    s3_client_of: cairn.ArtifactClient, s3_config: Config, monkeypatch: pytest.MonkeyPatch
):
    sending, gate = threading.Event(), threading.Event()
    upload_source = _presigned.upload_source

    def gated(*args: Any, **kwargs: Any) -> Any:
        sending.set()
        gate.wait(10)
        return upload_source(*args, **kwargs)

    monkeypatch.setattr(_presigned, "upload_source", gated)
    task = asyncio.create_task(s3_client_of.upload("t/cancelled.bin", DATA))
    assert await asyncio.to_thread(sending.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    assert _left_in_store(s3_config, s3_client_of.project) == []  # no multipart upload


async def test_the_client_gives_up_an_upload_whose_completion_failed_for_good(
    s3_client_of: cairn.ArtifactClient,
    s3_config: Config,
    pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(S3Backend, "digest", _unavailable)
    with pytest.raises(UnavailableError) as failed:
        await s3_client_of.upload("t/failed.bin", DATA)
    assert failed.value.reason == "OBJECT_STORE_UNAVAILABLE"
    left = "SELECT count(*) FROM artifacts.uploads WHERE project = $1"
    assert await pool.fetchval(left, s3_client_of.project) == 0
    assert _left_in_store(s3_config, s3_client_of.project) == []  # the completed object too


def _unavailable(self: S3Backend, key: str) -> tuple[str, int]:
    raise unavailable(ConnectionResetError("the store went away"))


async def test_giving_up_never_masks_the_error_that_ended_the_upload(
    s3_client_of: cairn.ArtifactClient, monkeypatch: pytest.MonkeyPatch
):
    async def broken(self: PresignedTransfers, *args: Any) -> None:
        raise RuntimeError("the abort failed")  # INTERNAL to the client

    aborted: list[str] = []
    original = _direct_transfers.DirectTransfers._give_up

    async def noted(self: Any, header: Any, *args: Any) -> None:
        aborted.append(header.path)
        await original(self, header, *args)

    monkeypatch.setattr(PresignedTransfers, "abort", broken)
    monkeypatch.setattr(_direct_transfers.DirectTransfers, "_give_up", noted)
    monkeypatch.setattr(S3Backend, "size", lambda self, key: len(DATA) + 1)
    with pytest.raises(InvalidArgumentError, match="received"):  # the store's other size
        await s3_client_of.upload("t/refused.bin", DATA)
    assert aborted == ["t/refused.bin"]


async def test_a_completion_whose_reply_is_lost_after_its_headers_answers_the_object(
    s3_server_port: int, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reply to CompleteUploadTicket lost after its headers had come (gRPC then holds
    the call done and sends it no more): the upload raised CompletionFailed, UNAVAILABLE,
    for the object it had published, and uploading it again was ALREADY_EXISTS. The
    client sends the completion again under its request id, answered with the object."""
    proxy = AnswerDroppingProxy(s3_server_port, after_headers=True)
    await proxy.start()
    unary = Transport.unary

    async def losing_the_completions_reply(
        transport: Transport, method: Any, request: Any, **options: Any
    ) -> Any:
        if isinstance(request, api.CompleteUploadTicketRequest) and not proxy.dropped:
            proxy.drop_next()
        return await unary(transport, method, request, **options)

    monkeypatch.setattr(Transport, "unary", losing_the_completions_reply)
    project = await new_project(s3_server_port, f"lost-reply-{unique}")
    try:
        async with cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", proxy.port, project=project, timeout=None
        ) as client:
            client.direct_threshold = 1
            info = await client.upload("model.bin", b"weights")
            assert proxy.dropped == 1
            assert info.sha256 == hashlib.sha256(b"weights").hexdigest()
            assert await client.read("model.bin") == b"weights"
    finally:
        await proxy.close()
