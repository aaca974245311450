"""An object store whose answer says success but holds none (a 200 OK whose body is an
<Error>, as S3 documents for a multipart completion, or an empty body): the write is
UNAVAILABLE with reason OBJECT_STORE_UNAVAILABLE, nothing is published, and the same
write succeeds once the store answers again. Never an acknowledged object without its
bytes, never INTERNAL."""

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import urllib3

import cairn
from cairn.exceptions import NotFoundError, UnavailableError
from cairn_server.common.config import Config
from tests.integration.artifacts.conftest import count_calls, store_through
from tests.proxy import S3AnsweringProxy, http_answer

MIB = 1024 * 1024
# Over the client's direct threshold, and streamed in several parts: a multipart upload.
SIZE = 20 * MIB
ERROR_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)
# The two answers of no use: S3's documented 200 with an error, and one with no body.
USELESS = {"error": http_answer("200 OK", ERROR_BODY), "empty": http_answer("200 OK", b"")}


@pytest.fixture
async def proxy(s3_config: Config) -> AsyncIterator[S3AnsweringProxy]:
    host, port = s3_config.s3_endpoint.split(":")
    proxy = S3AnsweringProxy(host, int(port))
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def store(
    s3_config: Config, pool: asyncpg.Pool, proxy: S3AnsweringProxy, unique: str
) -> AsyncIterator[cairn.ArtifactClient]:
    """A client of a server that reaches the store through the proxy."""
    async with store_through(s3_config, pool, proxy.port, f"answers-{unique}") as client:
        yield client


def _completion(answer: bytes):
    """Answers each multipart completion (POST ...?uploadId=) with answer."""
    return lambda method, target: answer if method == "POST" and "uploadId=" in target else None


async def _refused_then_stored(store: cairn.ArtifactClient, path: str, source: Path) -> None:
    with pytest.raises(UnavailableError) as failed:
        await store.upload(path, source)
    assert failed.value.reason == "OBJECT_STORE_UNAVAILABLE", failed.value
    with pytest.raises(NotFoundError):
        await store.stat(path)


@pytest.mark.parametrize("useless", sorted(USELESS))
@pytest.mark.parametrize("direct", [False, True], ids=["streamed", "direct"])
async def test_a_completion_answered_ok_without_a_result_is_unavailable_not_stored(
    store: cairn.ArtifactClient,
    proxy: S3AnsweringProxy,
    tmp_path: Path,
    useless: str,
    direct: bool,
) -> None:
    """Streamed, the upload was acknowledged, its object listed, and its read was
    DataLossError OBJECT_BYTES_MISSING: the bytes were in an unfinished multipart upload
    the janitor then discarded. An empty answer was INTERNAL (a ParseError); directly
    sent, the client asked to complete 25 times, each ABORTED UPLOAD_BEING_COMPLETED."""
    if not direct:
        store.direct_threshold = None
    source = tmp_path / "model.bin"
    source.write_bytes(os.urandom(SIZE))
    proxy.answer = _completion(USELESS[useless])
    await _refused_then_stored(store, "w/model.bin", source)

    proxy.answer = lambda method, target: None
    stored = await store.upload("w/model.bin", source)
    assert stored.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert await store.read("w/model.bin") == source.read_bytes()


@pytest.mark.parametrize("useless", sorted(USELESS))
async def test_a_confirmed_upload_whose_copy_is_answered_without_a_result_is_unavailable(
    store: cairn.ArtifactClient, proxy: S3AnsweringProxy, useless: str
) -> None:
    """ConfirmUpload copies the uploaded object into place: a copy answered OK without
    its result was INTERNAL (ValueError: XML element <ETag> not found, or ParseError)."""
    url = await store.presigned_url("p/x.bin", "PUT")
    body = os.urandom(MIB)
    await asyncio.to_thread(urllib3.request, "PUT", url.url, body=body, headers=url.headers)

    def copy(method: str, target: str) -> bytes | None:
        signed = "X-Amz-Signature" in target  # the client's own presigned requests
        return USELESS[useless] if method == "PUT" and not signed else None

    proxy.answer = copy
    with pytest.raises(UnavailableError) as failed:
        await store.confirm_upload("p/x.bin", upload_id=url.upload_id)
    assert failed.value.reason == "OBJECT_STORE_UNAVAILABLE"
    proxy.answer = lambda method, target: None
    await store.confirm_upload("p/x.bin", upload_id=url.upload_id)
    assert await store.read("p/x.bin") == body


async def test_a_direct_transfer_broken_at_the_store_says_so_by_its_reason(
    store: cairn.ArtifactClient, proxy: S3AnsweringProxy, tmp_path: Path
) -> None:
    """A part refused after others landed was UnavailableError with no reason."""
    source = tmp_path / "model.bin"
    source.write_bytes(os.urandom(24 * MIB))
    slow_down = http_answer("503 Service Unavailable", b"<Error><Code>SlowDown</Code></Error>")

    def second_part(method: str, target: str) -> bytes | None:
        signed_part = "partNumber=2" in target and "X-Amz-Signature" in target
        return slow_down if method == "PUT" and signed_part else None

    proxy.answer = second_part
    with pytest.raises(UnavailableError) as failed:
        await store.upload("d/model.bin", source)
    assert failed.value.reason == "OBJECT_STORE_UNAVAILABLE", failed.value


async def test_a_batch_of_files_the_store_cannot_read_is_unavailable_then_comes_down(
    store: cairn.ArtifactClient, proxy: S3AnsweringProxy, tmp_path: Path
) -> None:
    """A DownloadFiles call whose reads the store refuses fails as a Download does,
    UNAVAILABLE (OBJECT_STORE_UNAVAILABLE), never INTERNAL; the directory comes down
    once the store answers again."""
    for name in ("a", "b", "c"):
        await store.upload(f"g/{name}", name.encode())
    busy = http_answer("503 Service Unavailable", b"<Error><Code>SlowDown</Code></Error>")
    proxy.answer = lambda method, target: busy if method == "GET" else None
    batches = count_calls(store._downloads.batches, "DownloadFiles")
    streams = count_calls(store._downloads, "Download")

    with pytest.raises(UnavailableError) as failed:
        await store.download("g", tmp_path / "refused", timeout=30)
    assert failed.value.reason == "OBJECT_STORE_UNAVAILABLE", failed.value
    assert batches.calls >= 1 and streams.calls == 0  # the batch's own answer

    proxy.answer = lambda method, target: None
    written = await store.download("g", tmp_path / "out")
    assert sorted(file.read_bytes() for file in written.iterdir()) == [b"a", b"b", b"c"]
