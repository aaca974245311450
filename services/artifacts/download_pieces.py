"""A streamed Download's bytes on their way out: the object opened at the range asked
for, its chunks checked to that range's end, cut to fit a message, and each message
written at the pace of `pace.py`. Apart from the servicer, which holds the slots and
answers the call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator

import grpc

from cairn.artifacts.v1 import artifacts_service_pb2 as api

from ..common.errors import Aborted, OutOfRange, invalid_field
from . import backends, pace, threads
from .objects import StoredObject, bytes_missing
from .store import ObjectStore

# Opening an object that is replaced this many times in a row gives up (ABORTED).
OPEN_ATTEMPTS = 3


async def open_range(
    objects: ObjectStore,
    backend: backends.Backend,
    project: str,
    path: str,
    offset: int,
    length: int,
) -> tuple[StoredObject, Generator[bytes, None, None] | None]:
    """The object at path and its bytes in the range, opened (None when the range is
    empty). Bytes that vanished since the row was read (the object was replaced or
    deleted meanwhile) send it back to the row; an open file or stream keeps its
    bytes readable to the end."""
    stored = await objects.get(project, path)
    for _ in range(OPEN_ATTEMPTS):
        start, count = _byte_range(offset, length, stored.size)
        if not count:
            return stored, None
        try:
            opened = await threads.in_store(backend.open, stored.storage_key, start, count)
            return stored, _all_of(opened, count, path)
        except backends.MissingBytes:
            latest = await objects.get(project, path)
            if latest.storage_key == stored.storage_key:
                raise bytes_missing(path) from None
            stored = latest
    raise Aborted("OBJECT_CHANGED", f"{path!r} kept changing while it was opened; try again")


async def write_at_pace(
    context: grpc.aio.ServicerContext, message: api.DownloadResponse, progress: pace.Pace
) -> None:
    """message written to the stream, once the client has taken what came before, unless
    the download falls behind the pace first: a client that stops reading would hold
    its slot and the chunks read for it (of MAX_DOWNLOADS) for ever."""
    try:
        await progress.within(context.write(message))
    except TimeoutError:
        raise pace.stalled(
            "the download", "took nothing", "download again, reading the stream as it arrives"
        ) from None


def _byte_range(offset: int, length: int, size: int) -> tuple[int, int]:
    """The start and length of the bytes asked for of an object of size bytes (a length
    of 0: to its end)."""
    if offset < 0 or length < 0:
        raise invalid_field("offset" if offset < 0 else "length", "must not be negative")
    if offset > size:
        raise OutOfRange("OFFSET_PAST_END", f"offset {offset} is past the end ({size} bytes)")
    return offset, min(length or size - offset, size - offset)


def _all_of(
    chunks: Generator[bytes, None, None], count: int, path: str
) -> Generator[bytes, None, None]:
    """The count bytes of a range, or OBJECT_BYTES_MISSING once the store has no more:
    a stored file cut short behind the service's back ended a ranged read OK, short
    (a whole read is checked against its sha256 by the client, a range cannot be)."""
    sent = 0
    with contextlib.closing(chunks):
        for chunk in chunks:
            sent += len(chunk)
            yield chunk
    if sent < count:
        raise bytes_missing(path)


def pieces(chunk: bytes, most: int) -> Generator[bytes, None, None]:
    """chunk, in pieces of at most `most` bytes (itself when it is no larger)."""
    if len(chunk) <= most:
        yield chunk
        return
    for start in range(0, len(chunk), most):
        yield chunk[start : start + most]
