"""An Upload call's messages as the servicer reads them: the header first, answered by
a verdict in the initial metadata, then the chunks fed to a writer thread at the pace
of `pace.py`, then the finish. Apart from the servicer, which decides whether an upload
may go ahead and publishes it, and from `streams.py`, which hands the chunks to the
thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import NoReturn

import grpc

from cairn.artifacts.v1 import artifacts_service_pb2 as api

from ..common import messages
from ..common.errors import Unavailable, invalid_field
from . import backends, pace, threads
from .streams import MAX_CHUNK_BYTES, VerifyingReader
from .upload_fields import sha256_field
from .uploads import PendingUpload

# The verdict on an upload's header, sent as initial metadata; the client streams its
# chunks only after "accepted" (the same name is in the client's transport).
STREAM_VERDICT_HEADER = "x-cairn-stream"
# The longest an upload whose stream ended too soon waits for its client's cancel, should
# that be why it ended (_ended_too_soon): the cancel comes a few turns of the event loop
# after the stream's end, in the same process, a ceiling for a busy one.
CANCEL_ARRIVAL_SECONDS = 0.5


async def refuse(
    stream: AsyncIterator[api.UploadRequest],
    context: grpc.aio.ServicerContext,
    verdict: str = "rejected",
) -> None:
    """Tells the client not to send its chunks ("rejected", or "done" for a repeat of an
    upload already published), then reads what it still sends until it half-closes, so
    the answer does not overtake a write (which grpc would report as INTERNAL)."""
    await context.send_initial_metadata(((STREAM_VERDICT_HEADER, verdict),))
    await messages.drain(stream)


async def read_header(stream: AsyncIterator[api.UploadRequest]) -> api.UploadHeader:
    """The upload's first message, its header; INVALID_ARGUMENT for any other first."""
    first = await anext(stream, None)
    if first is None:
        await _ended_too_soon("header", "the upload stream ended before its header")
    if first.WhichOneof("part") != "header":
        raise invalid_field("header", "the first message of an upload must be its header")
    return first.header


async def _ended_too_soon(field: str, problem: str) -> NoReturn:
    """Raises INVALID_ARGUMENT for an upload stream that ended too soon, unless its
    client's cancel is why: a cancel ends the stream as its end does and reaches the call
    a moment later, cancelling this wait, so the call counts CANCELLED, not malformed."""
    await asyncio.sleep(CANCEL_ARRIVAL_SECONDS)
    raise invalid_field(field, problem)


async def write_upload(
    stream: AsyncIterator[api.UploadRequest],
    header: api.UploadHeader,
    upload: PendingUpload,
    expected_sha256: str,
    backend: backends.Backend,
    stopping: asyncio.Event,
) -> VerifyingReader:
    """The upload's bytes written to the store by a writer thread, as the client
    sends them, and checked to their end; the reader that checked them."""
    reader = VerifyingReader(
        asyncio.get_running_loop(),
        header.expected_size,
        expected_sha256,
        backend.write_limit(header.expected_size),
    )
    writing = threads.start_upload(
        backend.write,
        upload.storage_key,
        reader,
        upload.content_type,
        header.expected_size,
    )
    await pump(stream, reader, writing, stopping)
    await to_its_end(writing, reader.abandon, stopping)
    if not reader.verified:  # never publish what was not checked to the end
        raise invalid_field("finish", "the upload ended before its finish message")
    return reader


async def to_its_end(
    writing: asyncio.Future[None], abandon: Callable[[], None], stopping: asyncio.Event
) -> None:
    """Awaits the writer thread after the finish message, to its end even when the call
    is cancelled meanwhile (its deadline passes, its client leaves, as the last part or
    S3's completion goes on): what the call holds (its memory, its writer thread) is
    given back, and its bytes collected, only once the thread writes them no more, for
    a key collected first may be written after (an object nothing refers to). The
    thread is told to give up (abandon: `VerifyingReader.abandon` stops it where it
    still reads); then the cancellation goes on. A cancel while the server stops (its
    grace ended) ends the wait at once: a store's timeouts (a minute, retried) would
    keep a stopped server alive, and what the thread still writes the janitor removes,
    as after a crash."""
    try:
        await asyncio.shield(writing)
    except asyncio.CancelledError:
        abandon()
        while not writing.done():
            try:
                await asyncio.wait({writing})
            except asyncio.CancelledError:
                if stopping.is_set():
                    raise
        raise


async def pump(
    stream: AsyncIterator[api.UploadRequest],
    reader: VerifyingReader,
    writing: asyncio.Future[None],
    stopping: asyncio.Event,
) -> None:
    """Feeds chunks to the writer thread until the finish message (small ones merged, see
    streams.MERGE_BYTES). Any failure (a second header, a stream that ends without a
    finish because the client went away, one that falls behind the pace of pace.py while
    it holds a writer thread) reaches the writer, which then gives up without publishing
    anything."""
    messages = _paced(stream)
    try:
        async for message in messages:
            part = message.WhichOneof("part")
            if part == "finish":
                await _finish(
                    messages, reader, writing, sha256_field(message.finish.sha256, "finish.sha256")
                )
                return
            if part != "chunk":
                raise invalid_field("header", "an upload has exactly one header, first")
            chunk = message.chunk  # each read of a bytes field copies it
            if len(chunk) > MAX_CHUNK_BYTES:
                raise invalid_field("chunk", f"must be at most {MAX_CHUNK_BYTES} bytes")
            # An empty chunk would read as the end of the stream to the writer.
            if chunk and not await reader.feed(chunk, writing):
                return  # the writer failed; awaiting it raises its error
        if stopping.is_set():  # the end of a shutdown's grace ends streams like this
            raise Unavailable(
                "SHUTTING_DOWN", "the server shut down before the upload finished; upload again"
            )
        await _ended_too_soon("finish", "the upload stream ended without its finish message")
    except BaseException as error:
        await reader.fail(error, writing)
        with contextlib.suppress(BaseException):
            await writing
        raise


async def _paced(stream: AsyncIterator[api.UploadRequest]) -> AsyncIterator[api.UploadRequest]:
    """The stream's messages, each awaited until the upload falls behind the pace: a
    client that stalls, or trickles, would hold its writer thread (of UPLOAD_THREADS)
    for ever, and enough of them every other client's uploads."""
    progress = pace.Pace()
    while True:
        try:
            message = await progress.within(anext(stream))
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise pace.stalled("the upload", "sent nothing", "upload again") from None
        progress.moved += len(message.chunk)
        yield message


async def _finish(
    stream: AsyncIterator[api.UploadRequest],
    reader: VerifyingReader,
    writing: asyncio.Future[None],
    sha256: str,
) -> None:
    if sha256 and reader.expected_sha256 and sha256 != reader.expected_sha256:
        raise invalid_field("finish.sha256", "differs from the header's expected_sha256")
    if await anext(stream, None) is not None:
        raise invalid_field("finish", "nothing may follow the finish message")
    reader.expected_sha256 = sha256 or reader.expected_sha256
    await reader.finish(writing)
