"""The publication protocol under races and failures, on both backends: whatever
happens, stat and Download describe the same bytes, and acknowledged bytes are kept."""

import asyncio
import hashlib
import os

import pytest

import cairn
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.exceptions import (
    AlreadyExistsError,
    CairnError,
    DataLossError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
)
from tests.conftest import eventually

CONTENDERS = 8
TRIALS = 20
SIZE = 1024 * 1024 + 4321  # two chunks of the client's


async def test_racing_creates_have_one_winner_whose_bytes_are_kept(
    store: cairn.ArtifactClient, raw_objects
) -> None:
    for trial in range(TRIALS):
        path = f"race/new-{trial}.bin"
        bodies = [os.urandom(SIZE) for _ in range(CONTENDERS)]
        outcomes = await asyncio.gather(
            *(store.upload(path, body) for body in bodies), return_exceptions=True
        )
        winners = [i for i, outcome in enumerate(outcomes) if not isinstance(outcome, Exception)]
        assert len(winners) == 1, outcomes
        losers = [o for o in outcomes if isinstance(o, Exception)]
        assert all(isinstance(o, AlreadyExistsError) for o in losers), losers
        assert {o.reason for o in losers if isinstance(o, AlreadyExistsError)} == {
            "OBJECT_ALREADY_EXISTS"
        }
        sent = hashlib.sha256(bodies[winners[0]]).hexdigest()
        assert (await store.stat(path)).sha256 == sent
        assert hashlib.sha256(await store.read(path)).hexdigest() == sent
    # The losers' bytes were discarded: one stored key per object remains.
    await eventually(lambda: len(raw_objects()) == TRIALS, what="one key per object")


async def _cut_overwrite(store: cairn.ArtifactClient, path: str, raw_objects) -> None:
    """An overwrite whose client goes away after sending a few MiB."""
    sent = asyncio.Event()
    keys_before = len(raw_objects())

    async def requests():
        yield api.UploadRequest(
            header=api.UploadHeader(project=store.project, path=path, overwrite=True)
        )
        for _ in range(12):  # past an S3 part, so a multipart upload is under way
            yield api.UploadRequest(chunk=os.urandom(1024 * 1024))
        sent.set()
        await asyncio.Event().wait()  # never finishes

    call = store._stub.Upload(requests())
    await sent.wait()
    await eventually(lambda: len(raw_objects()) > keys_before, what="the new bytes arriving")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


async def test_a_failed_overwrite_leaves_the_old_object_intact(
    store: cairn.ArtifactClient, raw_objects
) -> None:
    old = os.urandom(SIZE)
    before = await store.upload("model.bin", old)
    await _cut_overwrite(store, "model.bin", raw_objects)
    with pytest.raises(InvalidArgumentError) as bad_header:
        await store.upload("model.bin", b"new", overwrite=True, content_type="text/plain\nx")
    assert bad_header.value.field_violations[0][0] == "content_type"
    with pytest.raises(DataLossError):  # checksum mismatch at the end of the stream
        await store._transport.client_stream(
            store._stub.Upload,
            _messages(store, "model.bin", os.urandom(SIZE), sha256="0" * 64),
        )
    with pytest.raises(InvalidArgumentError):  # fewer bytes than announced
        await store._transport.client_stream(
            store._stub.Upload, _messages(store, "model.bin", b"short", expected_size=SIZE)
        )
    assert await store.stat("model.bin") == before
    assert await store.read("model.bin") == old
    await eventually(lambda: len(raw_objects()) == 1, what="the failed uploads' bytes removed")


async def _messages(
    store: cairn.ArtifactClient, path: str, body: bytes, sha256: str = "", expected_size: int = 0
):
    yield api.UploadRequest(
        header=api.UploadHeader(
            project=store.project, path=path, overwrite=True, expected_size=expected_size
        )
    )
    yield api.UploadRequest(chunk=body)
    yield api.UploadRequest(finish=api.UploadFinish(sha256=sha256))


async def _agree(store: cairn.ArtifactClient, path: str) -> bytes | None:
    """What stat and Download say is at path, once they agree; fails if they do not."""
    try:
        info = await store.stat(path)
    except NotFoundError:
        with pytest.raises(NotFoundError):
            await store.read(path)
        return None
    body = await store.read(path)  # checks the sha256 the row recorded
    assert info.sha256 == hashlib.sha256(body).hexdigest()
    return body


async def test_delete_racing_an_overwrite_leaves_stat_and_download_in_agreement(
    store: cairn.ArtifactClient,
) -> None:
    seen = set()
    for trial in range(30):
        path = f"contested/{trial}.bin"
        await store.upload(path, b"first")
        replacement = os.urandom(4096)
        outcomes = await asyncio.gather(
            store.delete(path),
            store.upload(path, replacement, overwrite=True),
            return_exceptions=True,
        )
        assert not any(isinstance(o, InternalError) for o in outcomes), outcomes
        body = await _agree(store, path)
        assert body in (None, replacement)
        seen.add(body is None)
    assert seen  # at least one outcome was checked


async def test_download_racing_delete_gets_the_object_or_not_found(
    store: cairn.ArtifactClient,
) -> None:
    body = os.urandom(3 * 1024 * 1024)
    for trial in range(30):
        path = f"fleeting/{trial}.bin"
        await store.upload(path, body)
        read, deleted = await asyncio.gather(
            store.read(path), store.delete(path), return_exceptions=True
        )
        assert deleted == 1
        if isinstance(read, CairnError):
            assert isinstance(read, NotFoundError), read
        else:
            assert read == body
        assert await _agree(store, path) is None


@pytest.mark.parametrize(
    "paths",
    [
        ["p/a", "p/a/b"],
        ["q/a/b", "q/a"],
        ["long/" + "s" * 300],
        ["é" * 403],
    ],
    ids=["file-then-below-it", "below-then-the-file", "300-byte-segment", "403-two-byte-letters"],
)
async def test_every_valid_path_is_storable(store: cairn.ArtifactClient, paths) -> None:
    for path in paths:
        await store.upload(path, path.encode())
    for path in paths:
        assert await store.read(path) == path.encode()


async def test_a_corrupt_stored_byte_raises_data_loss(
    store: cairn.ArtifactClient, s3_config, tmp_path
) -> None:
    from urllib.parse import urlsplit

    from tests.conftest import BUCKET, s3_client

    info = await store.upload("weights.bin", b"A" * 1000)
    location = urlsplit(info.uri)
    if store.backend == "s3":  # type: ignore[attr-defined]
        s3_client(s3_config).put_object(BUCKET, location.path[1:], _reader(b"B" * 1000), 1000)
    else:
        with open(location.path, "r+b") as stored:
            stored.write(b"B")
    with pytest.raises(DataLossError) as raised:
        await store.read("weights.bin")
    assert raised.value.reason == "CHECKSUM_MISMATCH"
    with pytest.raises(DataLossError):
        await store.download("weights.bin", tmp_path / "weights.bin")
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a partial file
    assert await store.read("weights.bin", offset=1, length=3)  # ranges are not checked


def _reader(data: bytes):
    import io

    return io.BytesIO(data)


async def test_an_empty_chunk_is_no_end_of_the_stream(store: cairn.ArtifactClient) -> None:
    async def requests():
        yield api.UploadRequest(header=api.UploadHeader(project=store.project, path="gaps.bin"))
        for chunk in (b"abc", b"", b"def"):
            yield api.UploadRequest(chunk=chunk)
        yield api.UploadRequest(
            finish=api.UploadFinish(sha256=hashlib.sha256(b"abcdef").hexdigest())
        )

    await store._transport.client_stream(store._stub.Upload, requests())
    assert await store.read("gaps.bin") == b"abcdef"


@pytest.mark.parametrize(
    ("content_type", "field"),
    [
        ("text/plain; name=文件", "content_type"),
        ("a\nb", "content_type"),
        # A NUL is refused in every string of every request, named by its message path.
        ("text/plain\x00x", "header.content_type"),
    ],
)
async def test_a_content_type_http_cannot_carry_is_invalid(
    store: cairn.ArtifactClient, content_type: str, field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        await store.upload("typed.txt", b"x", content_type=content_type)
    assert raised.value.field_violations[0][0] == field
