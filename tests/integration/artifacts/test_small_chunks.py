"""Streamed uploads of many small chunks, on both backends: the chunks reach the writer
thread merged into blocks, so what the server spends per chunk is bounded per byte."""

import hashlib
import os
from collections.abc import Iterator

import pytest

import cairn
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn_server.artifacts import streams

MERGE = streams.MERGE_BYTES


@pytest.fixture
def handoffs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the items the writer thread takes from the event loop, one hand-off each
    (the end of the stream included)."""
    taken: list[int] = []
    take = streams.VerifyingReader._next

    def counted(reader: streams.VerifyingReader) -> bytes | None:
        item = take(reader)
        taken.append(len(item or b""))  # from the writer's thread: list.append is atomic
        return item

    monkeypatch.setattr(streams.VerifyingReader, "_next", counted)
    return taken


async def _upload(store: cairn.ArtifactClient, path: str, pieces: Iterator[bytes]) -> None:
    async def requests():
        yield api.UploadRequest(header=api.UploadHeader(project=store.project, path=path))
        for piece in pieces:
            yield api.UploadRequest(chunk=piece)
        yield api.UploadRequest(finish=api.UploadFinish())

    await store._transport.client_stream(store._stub.Upload, requests())


def _cut(body: bytes, sizes: list[int]) -> Iterator[bytes]:
    start = 0
    for size in sizes:
        yield body[start : start + size]
        start += size


async def _stored_as_sent(store: cairn.ArtifactClient, path: str, body: bytes) -> None:
    assert (await store.stat(path)).sha256 == hashlib.sha256(body).hexdigest()
    assert await store.read(path) == body


async def test_one_byte_chunks_reach_the_writer_merged(
    store: cairn.ArtifactClient, handoffs: list[int]
) -> None:
    """Each chunk was a hand-off to the writer thread and a hash update of its own:
    100,000 one-byte chunks cost the server 10 s of CPU, 1 MiB in one chunk 0.02 s."""
    body = os.urandom(10_000)
    await _upload(store, "tiny.bin", (body[i : i + 1] for i in range(len(body))))
    await _stored_as_sent(store, "tiny.bin", body)
    assert sum(handoffs) == len(body)
    assert len(handoffs) <= len(body) // MERGE + 2, f"{len(handoffs)} hand-offs"


async def test_small_chunks_between_large_ones_keep_their_order_and_bound(
    store: cairn.ArtifactClient, handoffs: list[int]
) -> None:
    """Small chunks are merged up to MERGE_BYTES; a large chunk goes on its own, after
    the small ones before it: at most two hand-offs per MERGE_BYTES, plus the end."""
    sizes = [1] * 3000 + [100_000] + [1000] * 150 + [MERGE] + [7] * 500
    body = os.urandom(sum(sizes))
    await _upload(store, "mixed.bin", _cut(body, sizes))
    await _stored_as_sent(store, "mixed.bin", body)
    assert max(handoffs) <= streams.MAX_CHUNK_BYTES  # the queue's bound holds
    assert len(handoffs) <= 2 * (len(body) // MERGE) + 2, f"{len(handoffs)} hand-offs"
