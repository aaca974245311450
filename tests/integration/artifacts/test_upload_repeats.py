"""A repeat of an upload that published (its answer was lost) is answered with what it
published, even after another upload replaced or removed that object: it is never
published again (which would overwrite the newer object) nor refused as ALREADY_EXISTS.
On every path: the stream, tickets (the byte endpoint; presigned parts on S3) and
presigned PUT URLs."""

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest

import cairn
from cairn._clients._presigned import upload_source
from cairn._headers import REQUEST_ID_HEADER
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.artifacts.v1 import artifacts_service_pb2_grpc
from cairn.exceptions import InvalidArgumentError, from_grpc_error
from cairn.types import ObjectInfo
from tests.conftest import eventually, holds_up_another, new_project, put_through
from tests.proxy import AnswerDroppingProxy

DIRECT_THRESHOLD = 1024 * 1024
LARGE = os.urandom(DIRECT_THRESHOLD + 5)  # goes through a ticket, not the stream


class PublishedAnswerDroppingProxy(AnswerDroppingProxy):
    """Loses the next answer message itself (its DATA frame, sent once the upload
    published; the stream's verdict, in headers before it, passes), then holds the
    caller's reconnection until `release()`: what others do meanwhile comes between
    the upload and its client's own retry."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port, after_headers=True)
        self.lost = asyncio.Event()
        self._released = asyncio.Event()
        self._released.set()

    def release(self) -> None:
        self._released.set()

    async def _serve(self, client_in, client_out) -> None:
        await self._released.wait()
        await super()._serve(client_in, client_out)

    def _ends_at(self, kind: int, payload: bytes) -> bool:
        if not super()._ends_at(kind, payload):
            return False
        self._released.clear()
        self.lost.set()
        return True


@pytest.fixture
async def proxy(server_port: int) -> AsyncIterator[PublishedAnswerDroppingProxy]:
    proxy = PublishedAnswerDroppingProxy(server_port)
    await proxy.start()
    yield proxy
    proxy.release()
    await proxy.close()


@pytest.fixture
async def local(server_port: int, unique: str) -> AsyncIterator[cairn.ArtifactClient]:
    """An ArtifactClient in a project of its own, on the filesystem backend."""
    project = await new_project(server_port, f"r-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", server_port, project=project, timeout=None
    ) as client:
        yield client


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _with_id(request_id: str) -> list[tuple[str, str]]:
    return [(REQUEST_ID_HEADER, request_id)]


@pytest.mark.parametrize("overwrite", [True, False])
async def test_a_retried_stream_after_another_upload_replaced_its_object_publishes_nothing(
    proxy: PublishedAnswerDroppingProxy, local: cairn.ArtifactClient, overwrite: bool
) -> None:
    store = local
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", proxy.port, project=store.project, timeout=None
    ) as retrying:
        await retrying.list("")  # the channel is up before the answer is armed
        proxy.drop_next()
        first = asyncio.create_task(retrying.upload("model.bin", b"A-old", overwrite=overwrite))
        await proxy.lost.wait()  # A published; its client is to retry by itself
        newer = await store.upload("model.bin", b"B-new", overwrite=True)
        proxy.release()
        answered = await first  # not ALREADY_EXISTS
    assert proxy.dropped == 1
    assert answered.sha256 == _sha(b"A-old")
    assert await store.read("model.bin") == b"B-new"  # B's acknowledged write stands
    assert (await store.stat("model.bin")).update_time == newer.update_time


@pytest.mark.parametrize("overwrite", [True, False])
async def test_a_repeated_ticket_upload_after_another_upload_replaced_its_object(
    store: cairn.ArtifactClient, overwrite: bool, unique: str
) -> None:
    store.direct_threshold = DIRECT_THRESHOLD
    request_id = f"ticket-{unique}"
    first = await store.upload("big.bin", LARGE, overwrite=overwrite, metadata=_with_id(request_id))
    await store.upload("big.bin", b"B-new", overwrite=True)
    ticket = await store._stub.CreateUploadTicket(
        api.CreateUploadTicketRequest(
            header=api.UploadHeader(
                project=store.project, path="big.bin", overwrite=overwrite, expected_size=len(LARGE)
            ),
            accept_presigned=True,
        ),
        metadata=_with_id(request_id),
    )
    assert ticket.HasField("object")  # no ticket, no parts: nothing is sent again
    again = await store.upload("big.bin", LARGE, overwrite=overwrite, metadata=_with_id(request_id))
    assert _same(again, first)
    assert await store.read("big.bin") == b"B-new"


async def test_a_repeated_confirmation_after_another_upload_replaced_its_object(
    s3_store: cairn.ArtifactClient, unique: str
) -> None:
    store, body = s3_store, b"A-old"
    put = await _presigned_put(store, "put.bin", body)
    confirm = _with_id(f"confirm-{unique}")
    first = await store.confirm_upload("put.bin", upload_id=put.upload_id, metadata=confirm)
    assert (first.size, first.sha256) == (len(body), hashlib.sha256(body).hexdigest())
    await store.upload("put.bin", b"B-new", overwrite=True)
    again = await store.confirm_upload("put.bin", upload_id=put.upload_id, metadata=confirm)
    assert _same(again, first)  # not UPLOAD_NOT_FOUND
    assert await store.read("put.bin") == b"B-new"


async def test_a_confirmation_of_another_upload_under_a_used_id_is_refused(
    s3_store: cairn.ArtifactClient, unique: str
) -> None:
    """Not answered with what the id published: the other upload would be told it was
    stored, and stay unpublished."""
    store, confirm = s3_store, _with_id(f"confirm-other-{unique}")
    first = await _presigned_put(store, "a.bin", b"A-old")
    await store.confirm_upload("a.bin", upload_id=first.upload_id, metadata=confirm)
    other = b"B-new bytes"
    second = await _presigned_put(store, "a.bin", other)
    for expected in (hashlib.sha256(other).hexdigest(), ""):
        with pytest.raises(InvalidArgumentError) as raised:
            await store.confirm_upload(
                "a.bin", upload_id=second.upload_id, expected_sha256=expected, metadata=confirm
            )
        assert raised.value.reason == "REQUEST_ID_REUSED"
    assert await store.read("a.bin") == b"A-old"
    # The other upload is still there to be confirmed, under an id of its own.
    assert (await store.confirm_upload("a.bin", upload_id=second.upload_id)).size == len(other)


async def test_a_completion_of_another_upload_under_a_used_id_is_refused(
    s3_store: cairn.ArtifactClient, unique: str
) -> None:
    """Answered with what the id published when its bytes were the same: the other
    upload was told it was stored, and stayed unpublished until the janitor took it."""
    store, complete = s3_store, _with_id(f"complete-other-{unique}")
    store.direct_threshold = DIRECT_THRESHOLD
    first = await store.upload("p.bin", LARGE, overwrite=True, metadata=complete)
    header = api.UploadHeader(
        project=store.project, path="p.bin", overwrite=True, expected_size=len(LARGE)
    )
    ticket = await store._stub.CreateUploadTicket(
        api.CreateUploadTicketRequest(header=header, accept_presigned=True)
    )
    parts = ticket.parts
    etags, sha256 = await asyncio.to_thread(
        upload_source, LARGE, len(LARGE), parts.part_size, list(parts.part_urls), lambda n: None
    )
    request = api.CompleteUploadTicketRequest(
        project=store.project,
        path="p.bin",
        upload=parts.upload,
        etags=etags,
        size=len(LARGE),
        sha256=sha256,
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await store._stub.CompleteUploadTicket(request, metadata=complete)
    assert from_grpc_error(raised.value).reason == "REQUEST_ID_REUSED"
    # The other upload is still there to be completed, under an id of its own.
    done = await store._stub.CompleteUploadTicket(request)
    assert (await store.stat("p.bin")).uri == done.object.uri != first.uri


async def _presigned_put(store: cairn.ArtifactClient, path: str, body: bytes) -> Any:
    """A presigned PUT URL of path, its body sent as binary (moto reads a PUT without
    a Content-Type as a form, and stores an empty object)."""
    put = await store.presigned_url(
        path, "PUT", overwrite=True, content_type="application/octet-stream"
    )
    await put_through(put.url, body, put.headers)
    return put


async def test_a_repeat_of_an_upload_whose_object_was_deleted_stores_nothing(
    store: cairn.ArtifactClient, unique: str
) -> None:
    request_id = f"deleted-{unique}"
    first = await store.upload("gone.bin", b"A-old", metadata=_with_id(request_id))
    await store.delete("gone.bin")
    again = await store.upload("gone.bin", b"A-old", metadata=_with_id(request_id))
    assert _same(again, first)
    assert await store.list("") == []


async def test_another_upload_under_a_request_id_that_published_is_refused_after_all(
    store: cairn.ArtifactClient, unique: str
) -> None:
    request_id = f"reused-{unique}"
    await store.upload("a.bin", b"A-old", metadata=_with_id(request_id))
    await store.upload("a.bin", b"B-new", overwrite=True)
    for path, data in [("a.bin", b"other bytes"), ("elsewhere.bin", b"A-old")]:
        with pytest.raises(InvalidArgumentError) as raised:
            await store.upload(path, data, overwrite=True, metadata=_with_id(request_id))
        assert raised.value.reason == "REQUEST_ID_REUSED"
    assert await store.read("a.bin") == b"B-new"
    assert [o.path for o in await store.list("")] == ["a.bin"]


async def test_two_uploads_under_one_request_id_at_once_publish_one_of_them(
    server_port: int, local: cairn.ArtifactClient, unique: str
) -> None:
    """Both are past their check of the request id before either publishes: the
    second to publish finds the first's publication, and its other bytes are refused."""
    store, request_id, finish = local, f"racing-{unique}", asyncio.Event()

    async def requests(data: bytes) -> AsyncIterator[api.UploadRequest]:
        header = api.UploadHeader(project=store.project, path="raced.bin", overwrite=True)
        yield api.UploadRequest(header=header)
        yield api.UploadRequest(chunk=data)
        await finish.wait()
        yield api.UploadRequest(finish=api.UploadFinish(sha256=_sha(data)))

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server_port}") as channel:
        stub = artifacts_service_pb2_grpc.ArtifactServiceStub(channel)
        calls = [
            stub.Upload(requests(data), metadata=_with_id(request_id))
            for data in (b"first bytes", b"other bytes")
        ]
        for call in calls:  # both accepted: past the check, their bytes on the way
            assert ("x-cairn-stream", "accepted") in tuple(await call.initial_metadata())
        finish.set()
        answers = await asyncio.gather(*calls, return_exceptions=True)
    published = [a for a in answers if isinstance(a, api.UploadResponse)]
    refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert len(published) == 1 and len(refused) == 1, answers
    assert from_grpc_error(refused[0]).reason == "REQUEST_ID_REUSED"
    stored = await store.stat("raced.bin")
    assert stored.sha256 == published[0].object.sha256
    assert stored.update_time == stored.create_time  # published once


async def test_an_upload_finding_its_id_on_the_object_at_its_path_is_held_to_its_bytes(
    local: cairn.ArtifactClient, pool: asyncpg.Pool, unique: str
) -> None:
    """A publication whose claim was pruned (kept an hour) is told by the object's row
    alone: an upload of other bytes under that id, past its check before the row said
    so, was answered OK with the object there, its own bytes thrown away."""
    store, request_id = local, f"pruned-{unique}"
    await store.upload("l.bin", b"aaaa")
    async with pool.acquire() as holder:
        publishing = holder.transaction()
        await publishing.start()
        await holder.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"{store.project}/l.bin"
        )
        upload = asyncio.ensure_future(
            store.upload("l.bin", b"bbbbbbbb", overwrite=True, metadata=_with_id(request_id))
        )
        await eventually(lambda: holds_up_another(holder), what="the upload's publication")
        # As a publication under the id whose claim the retention pruned left it.
        await holder.execute(
            "UPDATE artifacts.objects SET request_id = $3 WHERE project = $1 AND path = $2",
            store.project,
            "l.bin",
            request_id,
        )
        await publishing.commit()
    with pytest.raises(InvalidArgumentError) as refused:
        await upload
    assert refused.value.reason == "REQUEST_ID_REUSED"
    assert await store.read("l.bin") == b"aaaa"


def _same(again: ObjectInfo, first: ObjectInfo) -> bool:
    return (again.path, again.size, again.sha256, again.create_time, again.update_time) == (
        first.path,
        first.size,
        first.sha256,
        first.create_time,
        first.update_time,
    )
