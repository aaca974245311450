"""Direct transfer on the S3 backend: parts PUT to and ranges fetched from the object
store (moto on loopback) through presigned URLs, the service publishing only what it
read back and checked, and the streamed path when the store cannot be reached."""

import asyncio
import collections
import hashlib
import io
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from minio import Minio
from minio.error import S3Error

import cairn
from cairn._clients import _direct_transfers, _presigned
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.exceptions import (
    AbortedError,
    DataLossError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from cairn_server.artifacts import backends, presigned
from cairn_server.artifacts.blobs import MAX_OBJECT_BYTES
from cairn_server.artifacts.janitor import Janitor
from cairn_server.artifacts.leases import CompletionLeases
from cairn_server.artifacts.s3 import S3Backend
from cairn_server.artifacts.store import ObjectStore
from cairn_server.common.config import Config
from cairn_server.common.idempotency import RequestId
from tests.conftest import BUCKET, eventually, new_project, s3_client, serving

MIB = 1024 * 1024
PART = 5 * MIB  # S3's smallest part
DATA = os.urandom(2 * PART + 5)  # three parts, the last of 5 bytes


@pytest.fixture(autouse=True)
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(presigned, "PART_SIZE", PART)


@pytest.fixture
def moved(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """Transfers through presigned URLs: "upload" and "download" count those that went
    through, "... tried" every attempt."""
    counts: collections.Counter[str] = collections.Counter()
    for name, function in (("upload", "upload_source"), ("download", "download")):
        original = getattr(_presigned, function)

        def counted(*args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            counts[f"{_name} tried"] += 1
            result = _original(*args, **kw)
            counts[_name] += 1
            return result

        monkeypatch.setattr(_presigned, function, counted)
    return counts


@pytest.fixture
async def s3_direct(s3_store: cairn.ArtifactClient) -> cairn.ArtifactClient:
    s3_store.direct_threshold = MIB
    return s3_store


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _ticket(
    client: cairn.ArtifactClient, path: str, size: int = len(DATA), **metadata: str
) -> api.PresignedParts:
    header = api.UploadHeader(project=client.project, path=path, expected_size=size)
    reply = await client._stub.CreateUploadTicket(
        api.CreateUploadTicketRequest(header=header, accept_presigned=True),
        metadata=tuple(metadata.items()),
    )
    assert reply.HasField("parts") and not reply.HasField("ticket")
    return reply.parts


async def _put_parts(parts: api.PresignedParts) -> list[str]:
    etags, _ = await asyncio.to_thread(
        _presigned.upload_source, DATA, len(DATA), parts.part_size, parts.part_urls, lambda n: None
    )
    return etags


async def test_a_multipart_round_trip_through_the_store(
    s3_direct: cairn.ArtifactClient,
    s3_config: Config,
    tmp_path: Path,
    moved: collections.Counter[str],
):
    source = tmp_path / "data.bin"
    source.write_bytes(DATA)
    seen: list[tuple[int, int]] = []
    info = await s3_direct.upload("big/data.bin", source, progress=lambda *p: seen.append(p))
    assert (info.size, info.sha256) == (len(DATA), _sha(DATA))
    assert seen[-1] == (len(DATA), len(DATA)) and seen == sorted(seen)
    stored = s3_client(s3_config).get_object(BUCKET, info.uri.split(f"{BUCKET}/", 1)[1])
    assert _sha(stored.read()) == info.sha256  # the bytes in the store, end to end
    fetched = await s3_direct.download("big/data.bin", tmp_path / "out.bin")
    assert fetched.read_bytes() == DATA
    assert (moved["upload"], moved["download"]) == (1, 1)


async def test_a_thread_that_outlives_the_main_one_uploads_through_presigned_urls(
    s3_server_port: int, unique: str
) -> None:
    """The parts and the hashing ran on thread pools, stopped when the main thread ends:
    a sync client's upload from a thread that outlived it raised RuntimeError "cannot
    schedule new futures after interpreter shutdown", and nothing was stored."""
    project = await new_project(s3_server_port, f"s-{unique}")
    script = f"""
import pathlib, tempfile, threading
from cairn import sync

artifacts = sync.ArtifactClient.insecure_connection(
    "127.0.0.1", {s3_server_port}, project={project!r}
)

def upload():
    threading.main_thread().join()  # returns once the pools stopped taking work
    with tempfile.TemporaryDirectory() as directory:
        source = pathlib.Path(directory, "data.bin")
        source.write_bytes(b"x" * (2 * {PART} + 5))  # three parts, above direct_threshold
        info = artifacts.upload("big/data.bin", source)
        print(info.size, flush=True)

threading.Thread(target=upload).start()
"""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr, done.stdout) == (0, "", f"{2 * PART + 5}\n")


async def test_a_file_that_grew_during_its_upload_is_refused_not_published_cut(
    s3_direct: cairn.ArtifactClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    source = tmp_path / "growing.bin"
    source.write_bytes(DATA)
    upload = _presigned.upload

    def growing(*args: Any, **kwargs: Any) -> Any:
        with source.open("ab") as appended:  # after its size was measured
            appended.write(b"more")
        return upload(*args, **kwargs)

    monkeypatch.setattr(_presigned, "upload", growing)
    with pytest.raises(InvalidArgumentError, match=f"more than the {len(DATA)} bytes"):
        await s3_direct.upload("t/growing.bin", source)
    with pytest.raises(NotFoundError):
        await s3_direct.stat("t/growing.bin")


async def test_a_file_that_shrank_during_its_upload_is_size_mismatch(
    s3_direct: cairn.ArtifactClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The parts' reads came to the file's new end and raised a bare ValueError ('the
    source ended before its size'), no CairnError; the streamed path says SIZE_MISMATCH."""
    source = tmp_path / "shrinking.bin"
    source.write_bytes(DATA)
    upload = _presigned.upload

    def shrinking(*args: Any, **kwargs: Any) -> Any:
        os.truncate(source, len(DATA) // 3)  # after its size was measured
        return upload(*args, **kwargs)

    monkeypatch.setattr(_presigned, "upload", shrinking)
    with pytest.raises(InvalidArgumentError, match=f"shrank to {len(DATA) // 3} bytes") as refused:
        await s3_direct.upload("t/shrinking.bin", source)
    assert refused.value.reason == "SIZE_MISMATCH"
    with pytest.raises(NotFoundError):
        await s3_direct.stat("t/shrinking.bin")


async def test_a_completion_counts_parts_by_the_part_size_its_urls_were_made_for(
    s3_direct: cairn.ArtifactClient, monkeypatch: pytest.MonkeyPatch
):
    complete = await _completion(s3_direct, "t/sized.bin")  # three parts of 5 MiB
    monkeypatch.setattr(presigned, "PART_SIZE", 6 * MIB)  # a server of another version
    reply = await s3_direct._stub.CompleteUploadTicket(complete)
    assert reply.object.sha256 == _sha(DATA)


async def test_an_upload_of_parts_begun_without_a_recorded_size_is_not_waiting(
    s3_direct: cairn.ArtifactClient, pool: asyncpg.Pool
):
    complete = await _completion(s3_direct, "t/unsized.bin")
    await pool.execute(  # as an upload begun before sizes were recorded
        "UPDATE artifacts.uploads SET expected_size = NULL, part_size = NULL WHERE project = $1",
        s3_direct.project,
    )
    with pytest.raises(NotFoundError) as refused:
        await s3_direct._transport.unary(
            s3_direct._stub.CompleteUploadTicket, complete, timeout=10, metadata=None
        )
    assert refused.value.reason == "UPLOAD_NOT_FOUND"


async def test_an_upload_that_expired_during_its_completion_is_upload_expired(
    s3_direct: cairn.ArtifactClient, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
):
    publish = ObjectStore.publish

    async def expired_first(self: ObjectStore, *args: Any, **kwargs: Any) -> Any:
        await pool.execute(  # as the janitor expires it
            "DELETE FROM artifacts.uploads WHERE project = $1", s3_direct.project
        )
        return await publish(self, *args, **kwargs)

    complete = await _completion(s3_direct, "t/expired.bin")
    monkeypatch.setattr(ObjectStore, "publish", expired_first)
    with pytest.raises(AbortedError) as expired:
        await s3_direct._transport.unary(
            s3_direct._stub.CompleteUploadTicket, complete, timeout=10, metadata=None
        )
    assert expired.value.reason == "UPLOAD_EXPIRED"


async def test_one_request_id_publishes_once_even_with_overwrite(
    s3_direct: cairn.ArtifactClient, pool: asyncpg.Pool
):
    """A retry that passed the published_by check while the first call still ran."""
    objects, project = ObjectStore(pool), s3_direct.project
    first, second = [await objects.begin(project, "t/twice.bin", True) for _ in "12"]
    twice = RequestId("r-twice")
    published, _ = await objects.publish(first, 1, _sha(b"1"), "", request_id=twice)
    again, garbage = await objects.publish(second, 1, _sha(b"1"), "", request_id=twice)
    assert again == published and garbage == second.storage_key
    assert await objects.get(project, "t/twice.bin") == published


async def test_a_claim_the_bytes_do_not_match_publishes_nothing(
    s3_direct: cairn.ArtifactClient, s3_config: Config
):
    parts = await _ticket(s3_direct, "t/claimed.bin")
    etags = await _put_parts(parts)
    complete = api.CompleteUploadTicketRequest(
        project=s3_direct.project,
        path="t/claimed.bin",
        upload=parts.upload,
        etags=etags,
        size=len(DATA),
        sha256=_sha(b"other content"),
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await s3_direct._stub.CompleteUploadTicket(complete)
    assert refused.value.code() == grpc.StatusCode.DATA_LOSS
    with pytest.raises(NotFoundError):
        await s3_direct.stat("t/claimed.bin")
    assert _left_in_store(s3_config, s3_direct.project) == []  # its bytes went with it
    complete.sha256 = _sha(DATA)  # the upload was spent by the verdict
    with pytest.raises(grpc.aio.AioRpcError) as spent:
        await s3_direct._stub.CompleteUploadTicket(complete)
    assert spent.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_presigned_put_is_never_completed_as_parts_nor_parts_confirmed(
    s3_direct: cairn.ArtifactClient,
):
    """Only ConfirmUpload publishes a PUT URL's upload (sealed: copied where no URL
    writes), and only CompleteUploadTicket one of parts, with its recorded multipart id."""
    body = b"put around the service"
    put = await s3_direct.presigned_url("t/put.bin", "PUT", content_type="text/plain")
    request = urllib.request.Request(put.url, data=body, method="PUT", headers=put.headers)
    await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=10).close())
    complete = api.CompleteUploadTicketRequest(
        project=s3_direct.project,
        path="t/put.bin",
        upload=put.upload_id,
        etags=['"0"'],
        size=len(body),
        sha256=_sha(body),
    )
    with pytest.raises(NotFoundError) as refused:
        await s3_direct._transport.unary(
            s3_direct._stub.CompleteUploadTicket, complete, timeout=10, metadata=None
        )
    assert refused.value.reason == "UPLOAD_NOT_FOUND"
    parts = await _ticket(s3_direct, "t/parts.bin")
    with pytest.raises(NotFoundError) as unconfirmed:
        await s3_direct.confirm_upload("t/parts.bin", upload_id=parts.upload)
    assert unconfirmed.value.reason == "UPLOAD_NOT_FOUND"
    # The PUT's upload is still waiting for its confirmation.
    info = await s3_direct.confirm_upload("t/put.bin", _sha(body), upload_id=put.upload_id)
    assert info.sha256 == _sha(body)


async def test_a_claim_in_uppercase_hex_is_the_same_sha256(s3_direct: cairn.ArtifactClient):
    parts = await _ticket(s3_direct, "t/upper.bin")
    complete = api.CompleteUploadTicketRequest(
        project=s3_direct.project,
        path="t/upper.bin",
        upload=parts.upload,
        etags=await _put_parts(parts),
        size=len(DATA),
        sha256=_sha(DATA).upper(),
    )
    reply = await s3_direct._stub.CompleteUploadTicket(complete)
    assert reply.object.sha256 == _sha(DATA)


async def test_parts_larger_than_announced_are_refused_before_the_read_back(
    s3_direct: cairn.ArtifactClient, s3_config: Config
):
    parts = await _ticket(s3_direct, "t/grown.bin", size=6 * MIB)  # two parts of 5 MiB
    etags = []
    for url, size in zip(parts.part_urls, (PART, 4 * PART), strict=True):
        sent = await asyncio.to_thread(
            _presigned.upload_source, bytes(size), size, size, [url], lambda n: None
        )
        etags += sent[0]
    complete = api.CompleteUploadTicketRequest(
        project=s3_direct.project,
        path="t/grown.bin",
        upload=parts.upload,
        etags=etags,
        size=5 * PART,
        sha256=_sha(bytes(5 * PART)),
    )
    with pytest.raises(grpc.aio.AioRpcError) as claimed:  # not what was announced
        await s3_direct._stub.CompleteUploadTicket(complete)
    assert claimed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    complete.size = 6 * MIB
    with pytest.raises(grpc.aio.AioRpcError) as measured:  # not what the store holds
        await s3_direct._stub.CompleteUploadTicket(complete)
    assert measured.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "received 26214400" in str(measured.value.details())
    assert _left_in_store(s3_config, s3_direct.project) == []


def _left_in_store(s3_config: Config, project: str) -> list[str]:
    """Objects and unfinished multipart uploads under the project's keys."""
    client, prefix = s3_client(s3_config), f"store/_objects/{project}/"
    found = [o.object_name for o in client.list_objects(BUCKET, prefix=prefix, recursive=True)]
    uploads = client._list_multipart_uploads(BUCKET, prefix=prefix).uploads
    return found + [f"multipart:{u.object_name}" for u in uploads]


async def test_a_client_that_takes_no_presigned_urls_is_answered_as_before(
    s3_direct: cairn.ArtifactClient,
):
    header = api.UploadHeader(project=s3_direct.project, path="t/old.bin", expected_size=9)
    calls = [
        (s3_direct._stub.CreateUploadTicket, api.CreateUploadTicketRequest(header=header)),
        (
            s3_direct._stub.CreateDownloadTicket,
            api.CreateDownloadTicketRequest(project=s3_direct.project, path="t/old.bin"),
        ),
    ]
    for call, request in calls:
        with pytest.raises(FailedPreconditionError) as refused:
            await s3_direct._transport.unary(call, request, timeout=10, metadata=None)
        assert refused.value.reason == "DIRECT_TRANSFER_UNAVAILABLE"


async def test_a_completion_repeated_returns_the_object_it_published(
    s3_direct: cairn.ArtifactClient,
):
    request_id = ("x-cairn-request-id", f"complete-{s3_direct.project}")
    parts = await _ticket(s3_direct, "t/once.bin")
    complete = api.CompleteUploadTicketRequest(
        project=s3_direct.project,
        path="t/once.bin",
        upload=parts.upload,
        etags=await _put_parts(parts),
        size=len(DATA),
        sha256=_sha(DATA),
    )
    first = await s3_direct._stub.CompleteUploadTicket(complete, metadata=(request_id,))
    again = await s3_direct._stub.CompleteUploadTicket(complete, metadata=(request_id,))
    assert again.object == first.object and first.object.sha256 == _sha(DATA)
    # The whole upload sent again under the id (its answer lost) gets the object too.
    header = api.UploadHeader(project=s3_direct.project, path="t/once.bin")
    ticket = await s3_direct._stub.CreateUploadTicket(
        api.CreateUploadTicketRequest(header=header, accept_presigned=True), metadata=(request_id,)
    )
    assert ticket.object == first.object


async def _completion(client: cairn.ArtifactClient, path: str) -> api.CompleteUploadTicketRequest:
    parts = await _ticket(client, path)
    return api.CompleteUploadTicketRequest(
        project=client.project,
        path=path,
        upload=parts.upload,
        etags=await _put_parts(parts),
        size=len(DATA),
        sha256=_sha(DATA),
    )


async def test_a_completion_while_another_runs_is_aborted_and_its_repeat_answers_the_object(
    s3_direct: cairn.ArtifactClient, monkeypatch: pytest.MonkeyPatch
):
    """A retry of a completion still running (its deadline passed, say) neither
    completes the upload a second time nor spends it: it is told to call again, and
    once the first published, a repeat under its request id answers the object."""
    reading, released = threading.Event(), threading.Event()
    digest = S3Backend.digest

    def held(self: S3Backend, key: str) -> tuple[str, int]:
        reading.set()
        released.wait(10)
        return digest(self, key)

    monkeypatch.setattr(S3Backend, "digest", held)
    complete = await _completion(s3_direct, "t/raced.bin")
    request_id = (("x-cairn-request-id", f"raced-{s3_direct.project}"),)
    first = asyncio.ensure_future(
        s3_direct._stub.CompleteUploadTicket(complete, metadata=request_id)
    )
    assert await asyncio.to_thread(reading.wait, 10)
    with pytest.raises(grpc.aio.AioRpcError) as raced:
        await s3_direct._stub.CompleteUploadTicket(complete, metadata=request_id)
    assert raced.value.code() == grpc.StatusCode.ABORTED
    assert "UPLOAD_BEING_COMPLETED" in _reason(raced.value)
    released.set()
    published = (await first).object
    again = await s3_direct._stub.CompleteUploadTicket(complete, metadata=request_id)
    assert again.object == published and published.sha256 == _sha(DATA)


async def test_the_client_waits_for_a_completion_still_running_and_answers_its_object(
    s3_direct: cairn.ArtifactClient, monkeypatch: pytest.MonkeyPatch
):
    """Its first attempt timed out, say: the next ones are ABORTED until it published."""
    reading, released = threading.Event(), threading.Event()
    digest, holding = S3Backend.digest, CompletionLeases.holding
    refused = collections.Counter[str]()

    def held(self: S3Backend, key: str) -> tuple[str, int]:
        reading.set()
        released.wait(10)
        return digest(self, key)

    def counted(self: CompletionLeases, *args: Any) -> Any:
        if reading.is_set():  # an attempt after the first
            refused["attempts"] += 1
            if refused["attempts"] > len(_direct_transfers.UPLOAD_RETRY_WAITS) + 1:
                released.set()
        return holding(self, *args)

    monkeypatch.setattr(S3Backend, "digest", held)
    monkeypatch.setattr(CompletionLeases, "holding", counted)
    monkeypatch.setattr(_direct_transfers, "BEING_COMPLETED_POLL_SECONDS", 0.01)
    complete = await _completion(s3_direct, "t/waited.bin")
    request_id = (("x-cairn-request-id", f"waited-{s3_direct.project}"),)
    first = asyncio.ensure_future(
        s3_direct._stub.CompleteUploadTicket(complete, metadata=request_id)
    )
    assert await asyncio.to_thread(reading.wait, 10)
    waited = await s3_direct._direct._complete_upload(complete, 10, request_id)
    assert waited.sha256 == (await first).object.sha256 == _sha(DATA)


def _reason(error: grpc.aio.AioRpcError) -> str:
    return str(dict(error.trailing_metadata() or ()).get("grpc-status-details-bin", b""))


async def test_a_store_without_the_multipart_upload_is_no_verdict_on_the_claim(
    s3_direct: cairn.ArtifactClient, monkeypatch: pytest.MonkeyPatch
):
    """S3 answers NoSuchUpload, no object at the key yet, while another completion
    joins the parts: the upload is left to be completed, not spent."""
    answers = iter(["NoSuchUpload"])
    complete_parts = Minio._complete_multipart_upload

    def busy(self: Minio, *args: Any, **kwargs: Any) -> Any:
        code = next(answers, None)
        if code is not None:
            raise S3Error(None, code, "no such upload", None, None, None)  # type: ignore[arg-type]
        return complete_parts(self, *args, **kwargs)

    monkeypatch.setattr(Minio, "_complete_multipart_upload", busy)
    complete = await _completion(s3_direct, "t/busy.bin")
    with pytest.raises(grpc.aio.AioRpcError) as busy_answer:
        await s3_direct._stub.CompleteUploadTicket(complete)
    assert busy_answer.value.code() == grpc.StatusCode.ABORTED
    reply = await s3_direct._stub.CompleteUploadTicket(complete)
    assert reply.object.sha256 == _sha(DATA)


async def test_a_completion_the_store_failed_is_retried_by_the_channel_alone(
    s3_direct: cairn.ArtifactClient,
    monkeypatch: pytest.MonkeyPatch,
    moved: collections.Counter[str],
):
    """The store failing all but the last attempt the channel makes (4): the channel
    completes again, without sending the parts again."""
    failures = iter(range(3))
    get_object = Minio.get_object

    def failing(self: Minio, *args: Any, **kwargs: Any) -> Any:
        if next(failures, None) is not None:
            raise ConnectionResetError("the store went away")
        return get_object(self, *args, **kwargs)

    monkeypatch.setattr(Minio, "get_object", failing)  # the read-back's
    info = await s3_direct.upload("t/completed-again.bin", DATA)
    assert info.sha256 == _sha(DATA)
    assert moved["upload tried"] == 1 and next(failures, None) is None


async def test_a_completion_that_failed_for_good_does_not_send_the_parts_again(
    s3_direct: cairn.ArtifactClient,
    monkeypatch: pytest.MonkeyPatch,
    moved: collections.Counter[str],
):
    """One layer retries the completion (the channel's 4 attempts), and the whole upload
    is not sent again after it: an outage costs no more than 4 read-backs."""
    read_backs = collections.Counter[str]()

    def failing(self: Minio, *args: Any, **kwargs: Any) -> Any:
        read_backs["tried"] += 1
        raise ConnectionResetError("the store went away")

    monkeypatch.setattr(Minio, "get_object", failing)
    with pytest.raises(UnavailableError) as failed:
        await s3_direct.upload("t/never-completed.bin", DATA)
    assert failed.value.reason == "OBJECT_STORE_UNAVAILABLE"
    assert moved["upload tried"] == 1 and 1 <= read_backs["tried"] <= 4


async def test_a_streamed_download_the_store_fails_is_unavailable_not_internal(
    s3_store: cairn.ArtifactClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    await s3_store.upload("t/streamed.bin", b"streamed")  # under the direct threshold

    def failing(self: Minio, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionResetError("the store went away")

    monkeypatch.setattr(Minio, "get_object", failing)
    with pytest.raises(UnavailableError) as failed:
        await s3_store.download("t/streamed.bin", tmp_path / "out.bin")
    assert failed.value.reason == "OBJECT_STORE_UNAVAILABLE"


async def test_a_download_is_checked_against_the_recorded_sha256(
    s3_direct: cairn.ArtifactClient,
    s3_config: Config,
    tmp_path: Path,
    moved: collections.Counter[str],
):
    info = await s3_direct.upload("t/checked.bin", DATA)
    key = info.uri.split(f"{BUCKET}/", 1)[1]
    tampered = bytes([DATA[0] ^ 1]) + DATA[1:]  # by hand, in the store
    await asyncio.to_thread(
        s3_client(s3_config).put_object,
        BUCKET,
        key,
        _Bytes(tampered),  # type: ignore[arg-type]
        -1,
        part_size=PART,
    )
    with pytest.raises(DataLossError) as raised:
        await s3_direct.download("t/checked.bin", tmp_path / "out.bin")
    assert raised.value.reason == "CHECKSUM_MISMATCH"
    assert list(tmp_path.iterdir()) == []
    assert moved["download"] == 1  # fetched from the store, and checked there: not streamed


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self._data, self._at = data, 0

    def read(self, n: int = -1) -> bytes:
        chunk = self._data[self._at : self._at + (n if n >= 0 else len(self._data))]
        self._at += len(chunk)
        return chunk


async def test_a_source_that_cannot_be_read_is_not_taken_for_an_unreachable_store(
    s3_direct: cairn.ArtifactClient,
):
    parts = await _ticket(s3_direct, "t/unreadable.bin")

    def read_at(offset: int, length: int) -> bytes:
        raise OSError(5, "Input/output error")  # a failing disk, say

    with pytest.raises(OSError, match="Input/output error"):
        await asyncio.to_thread(
            _presigned.upload, read_at, len(DATA), parts.part_size, parts.part_urls, print
        )


async def test_a_cancelled_upload_stops_its_transfer_threads(
    s3_direct: cairn.ArtifactClient, monkeypatch: pytest.MonkeyPatch
):
    """Threads are not cancelled with the task that awaits them: the transfer must be
    told to stop, or it PUTs the rest of the object unseen."""
    reading, gate, ended = threading.Event(), threading.Event(), threading.Event()
    outcome: list[object] = []
    upload = _presigned.upload

    def gated(read_at: Any, *args: Any, **kwargs: Any) -> Any:
        def held(offset: int, length: int) -> bytes:
            reading.set()
            gate.wait(10)
            return bytes(read_at(offset, length))

        try:
            outcome.append(upload(held, *args, **kwargs))
        except Exception as error:
            outcome.append(error)
        finally:
            ended.set()

    monkeypatch.setattr(_presigned, "upload", gated)
    task = asyncio.create_task(s3_direct.upload("t/cancelled.bin", DATA))
    assert await asyncio.to_thread(reading.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    assert await asyncio.to_thread(ended.wait, 10)
    assert isinstance(outcome[0], Exception)  # stopped, not every part PUT


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def unreachable_store_port(s3_config: Config, pool: asyncpg.Pool) -> AsyncIterator[int]:
    """An S3 server whose presigned URLs name a port where nothing listens."""
    endpoint = f"127.0.0.1:{_closed_port()}"
    async with serving(s3_config, pool, ["artifacts"], s3_public_endpoint=endpoint) as port:
        yield port


async def test_an_unreachable_store_falls_back_to_streaming(
    unreachable_store_port: int,
    unique: str,
    tmp_path: Path,
    moved: collections.Counter[str],
):
    project = await new_project(unreachable_store_port, f"us-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", unreachable_store_port, project=project, timeout=None
    ) as client:
        client.direct_threshold = MIB
        info = await client.upload("f/data.bin", DATA)
        assert (info.size, info.sha256) == (len(DATA), _sha(DATA))
        fetched = await client.download("f/data.bin", tmp_path / "out.bin")
        assert fetched.read_bytes() == DATA
        assert client._direct_offered  # still offered: the store is skipped a while
    # Streamed both ways; the download did not try the store the upload could not reach.
    assert moved == {"upload tried": 1}


@pytest.mark.parametrize("change", ["deleted", "replaced"])
async def test_a_direct_download_of_an_object_gone_meanwhile_streams_the_path_again(
    s3_direct: cairn.ArtifactClient,
    s3_config: Config,
    pool: asyncpg.Pool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    change: str,
):
    """Its ranges fetched after the object was replaced or deleted and its bytes
    collected answered 404, and the download failed UNAVAILABLE ("the transfer through
    the object store broke"), no reason given, though the path still named an object.
    Now it streams the path as it is: the new bytes, or OBJECT_NOT_FOUND."""
    monkeypatch.setattr(_presigned, "MIN_RANGE", MIB)  # four ranges, two at a time
    s3_direct.direct_connections = 2
    await s3_direct.upload("g.bin", DATA)
    first_write, go_on = threading.Event(), threading.Event()
    pwrite = os.pwrite

    def held_pwrite(descriptor: int, data: bytes, offset: int) -> int:
        first_write.set()
        go_on.wait(30)
        return pwrite(descriptor, data, offset)

    monkeypatch.setattr(_presigned.os, "pwrite", held_pwrite)
    shown: list[int] = []
    downloading = asyncio.create_task(
        s3_direct.download(
            "g.bin", tmp_path / "out.bin", progress=lambda done, _: shown.append(done)
        )
    )
    await eventually(first_write.is_set, what="the first range arriving")
    if change == "deleted":
        await s3_direct.delete("g.bin")
    else:
        await s3_direct.upload("g.bin", b"new", overwrite=True)
    janitor = Janitor(ObjectStore(pool), backends.from_config(s3_config), timedelta(0))
    await janitor.collect_garbage()
    go_on.set()
    if change == "deleted":
        with pytest.raises(NotFoundError):
            await downloading
    else:
        assert (await downloading).read_bytes() == b"new"
    assert shown == sorted(shown) and max(shown, default=0) <= len(DATA)


@pytest.mark.parametrize("cut", [9 * MIB + MIB // 2, 9 * MIB], ids=["short", "past-the-bytes"])
async def test_a_direct_download_of_an_object_cut_short_is_missing_bytes(
    s3_direct: cairn.ArtifactClient,
    s3_config: Config,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    moved: collections.Counter[str],
    cut: int,
):
    """The object's key rewritten shorter behind the service's back: its last range
    arrived short (206) or past the bytes (416) after others landed, and the download
    failed UNAVAILABLE, no reason given, on every attempt. Now it streams the path,
    which says DATA_LOSS OBJECT_BYTES_MISSING."""
    monkeypatch.setattr(_presigned, "MIN_RANGE", MIB)  # four ranges, two at a time
    s3_direct.direct_connections = 2
    await s3_direct.upload("cut.bin", DATA)
    client = s3_client(s3_config)
    prefix = f"store/_objects/{s3_direct.project}/"
    (key,) = [o.object_name for o in client.list_objects(BUCKET, prefix=prefix, recursive=True)]
    client.put_object(BUCKET, key, io.BytesIO(DATA[:cut]), cut)
    with pytest.raises(DataLossError) as missing:
        await s3_direct.download("cut.bin", tmp_path / "out.bin")
    assert missing.value.reason == "OBJECT_BYTES_MISSING"
    assert (moved["download tried"], moved["download"]) == (1, 0)  # streamed after


async def test_an_upload_never_completed_is_discarded_once_its_urls_expired(
    s3_direct: cairn.ArtifactClient, s3_config: Config, pool: asyncpg.Pool
):
    await _ticket(s3_direct, "t/abandoned.bin")  # as a client that fell back leaves it
    janitor = Janitor(ObjectStore(pool), backends.from_config(s3_config), timedelta(0))
    await janitor.sweep()
    assert len(_left_in_store(s3_config, s3_direct.project)) == 1  # its URLs still work
    await pool.execute(
        """UPDATE artifacts.uploads SET url_expire_time = now() - interval '1 second'
           WHERE project = $1""",
        s3_direct.project,
    )
    await janitor.sweep()
    assert _left_in_store(s3_config, s3_direct.project) == []


async def test_the_parts_of_the_largest_object_fit_a_server_taking_the_least_message(
    s3_config: Config, pool: asyncpg.Pool, unique: str
):
    """Two thousand part URLs of about 600 bytes came to over 1 MiB: through a 1 MiB
    server, a ticket for an object of more than about 1,700 parts could not be sent."""
    # A public address as long as a host name may be: URLs of about 800 bytes.
    host = ".".join(["store" + "e" * 58] * 3) + ".example"
    changes = dict(max_message_bytes=MIB, s3_public_endpoint=f"{host}:9000")
    async with serving(s3_config, pool, ["artifacts"], **changes) as port:
        project = await new_project(port, f"lm-{unique}")
        async with cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", port, project=project
        ) as client:
            size = MAX_OBJECT_BYTES
            parts = await _ticket(client, "t/largest.bin", size)
            assert parts.ByteSize() < MIB - 1024
            assert (len(parts.part_urls) - 1) * parts.part_size < size
            assert len(parts.part_urls) * parts.part_size >= size
            assert parts.part_size <= 5 * 1024 * MIB  # S3's largest part
