"""Bridging an upload's async gRPC stream to the blocking writers of the backends.

The backends (the minio SDK, file writes) run in a worker thread and read from a
`VerifyingReader`, which pulls chunks from a bounded queue the event loop fills, and
hashes them on the way. At the end of the stream it checks the size and checksum and
raises instead of reporting end-of-file when they do not match, so the writer never
completes (no rename into place, no CompleteMultipartUpload): nothing becomes visible.

Small chunks are merged on the event loop before they are queued: each item costs a
hand-off between threads and a hash update, which made 1-byte chunks cost the server
about 100 µs each (10 s of CPU for 100 KB, against 0.02 s for 1 MiB in one chunk).
Merged, an item carries MERGE_BYTES, but at the end or before a chunk that large.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncGenerator, Generator

from ..common.errors import DataLoss, FailedPrecondition, InvalidArgument
from . import threads
from .blobs import MAX_OBJECT_BYTES

QUEUE_CHUNKS = 4  # bounds memory: at most this many chunks wait for the writer
# The largest chunk an upload may send (the client sends 1023 KiB), so that the queue's
# bound is one of bytes: chunks as large as a message (16 MiB by default) held 64 MiB.
MAX_CHUNK_BYTES = 4 * 1024 * 1024
# Smaller chunks are merged into items of at most this many bytes before they are queued.
MERGE_BYTES = 64 * 1024


class StreamClosed(Exception):
    """The client went away or the stream broke before the upload finished."""


class VerifyingReader:
    """A file-like `read(n)` over chunks put by the event loop, verified at the end."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        expected_size: int,
        expected_sha256: str,
        most: int = MAX_OBJECT_BYTES,
    ) -> None:
        self._loop = loop
        self._most = most  # what the writer takes, when no size was announced
        self._queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(QUEUE_CHUNKS)
        self._rest = b""  # what a read left of the chunk it took part of
        self._merging = bytearray()  # small chunks not queued yet: under MERGE_BYTES
        self._done = False
        self._abandoned = False  # its call ended after its finish (see abandon)
        self.verified = False  # the end was reached and size and checksum matched
        self.expected_size = expected_size
        self.expected_sha256 = expected_sha256
        self.size = 0
        self.hash = hashlib.sha256()

    async def feed(self, chunk: bytes, writer: asyncio.Future[None]) -> bool:
        """Queues a chunk, or merges it with the small ones before it (see MERGE_BYTES);
        False when the writer has stopped (it will not read more)."""
        if writer.done():
            return False
        overflows = len(self._merging) + len(chunk) > MERGE_BYTES
        if self._merging and overflows and not await self._put(self._merged(), writer):
            return False
        if len(chunk) >= MERGE_BYTES:  # on its own, not copied
            return await self._put(chunk, writer)
        self._merging += chunk
        if len(self._merging) == MERGE_BYTES:
            return await self._put(self._merged(), writer)
        return True

    async def finish(self, writer: asyncio.Future[None]) -> None:
        if self._merging and not await self._put(self._merged(), writer):
            return
        await self._put(None, writer)

    async def fail(self, error: BaseException, writer: asyncio.Future[None]) -> None:
        self._merging = bytearray()
        await self._put(error, writer)

    def abandon(self) -> None:
        """Tells the writer that its call ended after the finish was queued: each read
        from then on raises (StreamClosed) rather than hand on a chunk or the end, so a
        writer that reads before it commits (S3 past its last part) gives up then."""
        self._abandoned = True

    def _merged(self) -> bytes:
        merged, self._merging = bytes(self._merging), bytearray()
        return merged

    async def _put(self, item: bytes | BaseException | None, writer: asyncio.Future[None]) -> bool:
        if writer.done():
            return False
        try:
            self._queue.put_nowait(item)  # the usual case: room in the queue, no waiting
            return True
        except asyncio.QueueFull:
            pass
        putting = asyncio.ensure_future(self._queue.put(item))
        await asyncio.wait({putting, writer}, return_when=asyncio.FIRST_COMPLETED)
        if not putting.done():
            putting.cancel()
            return False
        return True

    @property
    def sha256(self) -> str:
        return self.hash.hexdigest()

    def read(self, n: int = -1) -> bytes:
        """Blocking: called from the writer's thread. A short read, which file-like
        readers allow: a whole chunk as it came (not copied), or what is left of one
        that a read before took only part of; empty at the end. A read filled up to n
        would gather chunks in a buffer only to copy them out again."""
        if self._abandoned:
            raise StreamClosed("the upload's call ended before its bytes were stored")
        data = self._rest
        if not data:
            data = (None if self._done else self._next()) or b""
        if 0 <= n < len(data):
            data, self._rest = data[:n], data[n:]
        else:
            self._rest = b""
        return data

    def _next(self) -> bytes | None:
        """The next chunk, hashed and counted; None (after verifying) at the end."""
        item = asyncio.run_coroutine_threadsafe(self._queue.get(), self._loop).result()
        if isinstance(item, BaseException):
            raise StreamClosed("upload stream ended early") from item
        if item is None:
            self._done = True
            self._verify()
            return None
        self.size += len(item)
        check_growth(self.size, self.expected_size, self._most)
        self.hash.update(item)
        return item

    def _verify(self) -> None:
        verify(self.size, self.sha256, self.expected_size, self.expected_sha256)
        self.verified = True


def check_growth(size: int, expected_size: int, most: int = MAX_OBJECT_BYTES) -> None:
    """Raises as soon as more bytes arrived than announced (or, when the size is
    unknown, than most, what the writer takes): a client cannot make the service write
    without end."""
    if expected_size and size > expected_size:
        raise InvalidArgument(
            "SIZE_MISMATCH",
            f"received more than the {expected_size} bytes expected",
            metadata={"expected_size": str(expected_size), "size": str(size)},
        )
    if size > most:
        raise too_large_to_stream(size, most)


def too_large_to_stream(size: int, most: int) -> FailedPrecondition:
    return FailedPrecondition(
        "TOO_LARGE_TO_STREAM",
        f"at most {most} bytes stream through this server, not {size}: send it by direct "
        "transfer (the client does above its direct_threshold, where the server offers "
        "it and the client reaches the store)",
        metadata={"size": str(size), "max_size": str(most)},
    )


def verify(size: int, sha256: str, expected_size: int, expected_sha256: str) -> None:
    """Raises unless what arrived is what was announced (0 and "": not announced)."""
    if expected_size and size != expected_size:
        raise InvalidArgument(
            "SIZE_MISMATCH",
            f"expected {expected_size} bytes, received {size}",
            metadata={"expected_size": str(expected_size), "size": str(size)},
        )
    if expected_sha256 and sha256 != expected_sha256:
        raise DataLoss(
            "CHECKSUM_MISMATCH",
            f"content has sha256 {sha256}, not the expected {expected_sha256}",
            metadata={"expected_sha256": expected_sha256, "sha256": sha256},
        )


async def read_ahead(chunks: Generator[bytes, None, None]) -> AsyncGenerator[bytes, None]:
    """The chunks of a blocking reader, the next read in a thread while the caller
    sends the one before; the reader is closed however the iteration ends."""
    pending = asyncio.ensure_future(threads.in_store(next, chunks, b""))
    try:
        while chunk := await pending:
            pending = asyncio.ensure_future(threads.in_store(next, chunks, b""))
            yield chunk
    finally:
        with contextlib.suppress(Exception):
            await pending  # a generator cannot be closed while it runs
        await threads.in_store(chunks.close)
