"""Direct transfer for `ArtifactClient` (docs/artifacts.md, "Direct transfer"): the
bytes go over the service's byte endpoint, or through presigned URLs to and from the
object store (S3), and the gRPC service only hands out tickets and publishes. Which
one, and when to stream through the service instead, is decided here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

from google.protobuf.message import DecodeError

from .._backoff import Offer, backoff
from .._headers import Metadata
from .._progress import Meter
from .._transport import Transport
from ..artifacts.v1 import artifacts_pb2 as pb
from ..artifacts.v1 import artifacts_service_pb2 as api
from ..artifacts.v1 import artifacts_service_pb2_grpc
from ..exceptions import (
    AbortedError,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnavailableError,
    UnimplementedError,
)
from ..types._arguments import proto
from ..types._artifacts import ObjectInfo, object_from_proto
from . import _direct, _presigned
from ._local_files import Source, check_length, file_for, open_source

# Waits before sending an upload again after UNAVAILABLE, as calls are sent again
# (Transport).
UPLOAD_RETRY_WAITS = (0.1, 0.4, 1.6)
# A completion on S3 reads the object back: its default deadline is this, plus the
# object's size at this rate, a slow one for a store reading its own object, so that
# only a call that is stuck reaches it.
COMPLETION_SECONDS = 30.0
COMPLETION_BYTES_PER_SECOND = 50 * 1024 * 1024
NO_DIRECT = "DIRECT_TRANSFER_UNAVAILABLE"
SHUTTING_DOWN = "SHUTTING_DOWN"
# Another attempt of the completion still runs (its deadline passed, say): call again.
BEING_COMPLETED = "UPLOAD_BEING_COMPLETED"
BEING_COMPLETED_POLL_SECONDS = 1.0
# The server completes as many uploads as it may at once: call again after a backoff
# (jittered, so that refused clients do not come back together), as gRPC's retries wait.
COMPLETIONS_BUSY = "COMPLETIONS_BUSY"
BUSY_BACKOFF_SECONDS = (0.1, 2.0)  # the first wait and the longest, doubling between
# The server lets as many uploads wait for a writer as it may: it refused this one (or a
# batch of files, `_file_batches.py`) before storing anything, so it is sent again after
# a backoff, as COMPLETIONS_BUSY, whatever the source.
UPLOADS_BUSY = "UPLOADS_BUSY"
# How long giving up an upload (AbortUploadTicket) may take: it is a courtesy to the
# store, and the error that ended the upload waits for it.
ABORT_SECONDS = 10.0
# A byte endpoint this client could not reach is not tried again for this long: each
# try costs a connect timeout (3 s) when its packets are dropped.
UNREACHABLE_SECONDS = 300.0
# What an ObjectInfo the byte endpoint answers holds, unless it was garbled on the way.
SHA256_HEX = re.compile("[0-9a-f]{64}")
EMPTY_SHA256 = hashlib.sha256().hexdigest()
_T = TypeVar("_T")


@dataclass(frozen=True)
class Upload:
    """One upload as ArtifactClient sends it, the same in each attempt: where to, what,
    how, and its progress, shown from `start` bytes on."""

    path: str
    source: Source
    overwrite: bool
    content_type: str | None
    counted: Meter
    start: int
    timeout: float | None
    metadata: Metadata

    def header(self, project: str, size: int | None, sha256: str) -> api.UploadHeader:
        return proto(
            api.UploadHeader,
            project=project,
            path=self.path,
            content_type=self.content_type or "",
            expected_size=size or 0,
            expected_sha256=sha256,
            overwrite=self.overwrite,
        )


def _object_answered(answer: bytes, path: str) -> pb.ObjectInfo:
    """The object the byte endpoint answered an upload with. UnavailableError when the
    answer is no whole ObjectInfo of path (garbled or cut on the way): the upload was
    published, most likely, and is sent again under its request id, which answers it;
    taken as it came, it would parse as an empty object, a success or REQUEST_ID_REUSED."""
    try:
        published = pb.ObjectInfo.FromString(answer)
    except DecodeError as error:
        raise UnavailableError(f"the byte endpoint's answer was garbled: {error}") from error
    whole = SHA256_HEX.fullmatch(published.sha256) and (
        published.size > 0 or published.sha256 == EMPTY_SHA256
    )
    if published.path != path or not whole:
        raise UnavailableError(
            f"the byte endpoint answered the upload of {path!r} with {published.path!r}, "
            f"{published.size} bytes, sha256 {published.sha256[:64]!r}"
        )
    return published


async def _published_already(stream: BinaryIO, expected: str, done: pb.ObjectInfo) -> ObjectInfo:
    """The object an upload's request id published already, unless it holds other bytes
    than stream's (sha256 expected, when known: a local file's is not before it is
    read, and the service then compared the size alone)."""
    published = object_from_proto(done)
    if not expected:
        await asyncio.to_thread(_check_same_bytes, stream, published)
    elif expected != published.sha256:
        raise _request_id_reused(published)
    return published


def _check_same_bytes(stream: BinaryIO, done: ObjectInfo) -> None:
    """Raises unless stream holds the bytes of done, which the upload's request id
    published: else another upload was sent under that id."""
    digest = hashlib.sha256()
    while chunk := stream.read(1024 * 1024):
        digest.update(chunk)
    if digest.hexdigest() != done.sha256:
        raise _request_id_reused(done)


def _request_id_reused(done: ObjectInfo) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"this request id published other content at {done.path!r}; "
        "send a new id with every new upload",
        reason="REQUEST_ID_REUSED",
        metadata={"path": done.path},
    )


class CompletionFailed(UnavailableError):
    """A direct upload's completion stayed UNAVAILABLE through the client's resends:
    the upload is not sent again (its parts are in the store already; the janitor
    discards them), the error is raised."""

    @classmethod
    def of(cls, error: UnavailableError) -> CompletionFailed:
        return cls(
            error.message,
            reason=error.reason,
            code=error.code,
            metadata=error.metadata,
            field_violations=error.field_violations,
            grpc_error=error.grpc_error,
        )


class DirectTransfers:
    """The direct transfers of one client, and what it learnt of the ways they go."""

    def __init__(
        self,
        transport: Transport,
        stub: artifacts_service_pb2_grpc.ArtifactServiceStub,
        connections: Callable[[], int],
    ) -> None:
        self._transport = transport
        self._stub = stub
        # How many connections a transfer through the object store opens (the
        # client's direct_connections, read at each transfer).
        self._connections = connections
        self.offer = Offer()  # of direct transfer: withdrawn while the server has none for us
        # A client whose channel has TLS sends nothing in clear: not to a plain byte
        # endpoint (a server behind a TLS-terminating proxy runs one), nor to an http://
        # object store; it streams through the channel instead.
        self._tls_only = transport.tls
        self._unreachable: dict[tuple[str, int], float] = {}  # endpoint: when to try again
        # The object store of presigned transfers (S3) could not be reached: until then,
        # stream (asking would begin an upload that is never used).
        self._store_unreachable_until = 0.0

    def goes_direct(self, size: int | None, threshold: int | None) -> bool:
        """Whether a transfer of this size tries direct transfer first."""
        return (
            self.offer.standing
            and threshold is not None
            and (size or 0) >= max(threshold, 1)
            and self._store_unreachable_until <= time.monotonic()
        )

    def _endpoint(self, ticket: api.DirectTicket) -> _direct.Endpoint | None:
        host = ticket.host or self._transport.artifacts_host
        if self._tls_only and not ticket.tls:
            # A server hands out byte-endpoint tickets only when it has no presigned
            # transfer, and its endpoint does not turn TLS: asking again would cost a
            # ticket call (and, for an upload, a ticket the server keeps) per transfer.
            self.offer.withdraw()
            return None
        if not host:
            return None
        tls = self._transport.direct_tls if ticket.tls else None
        if ticket.tls and tls is None:
            return None
        if self._unreachable.get((host, ticket.port), 0.0) > time.monotonic():
            return None
        return _direct.Endpoint(host, ticket.port, ticket.ticket, tls)

    def _fell_back(self, endpoint: _direct.Endpoint, error: _direct.Unreachable) -> None:
        """Notes an endpoint that cannot be reached from here, so that the next large
        transfers stream at once instead of waiting for it."""
        if error.lasting:
            later = time.monotonic() + UNREACHABLE_SECONDS
            self._unreachable[(endpoint.host, endpoint.port)] = later

    def _store_fell_back(self, error: _direct.Unreachable) -> None:
        """As `_fell_back`, for the object store of presigned transfers."""
        if error.lasting:
            self._store_unreachable_until = time.monotonic() + UNREACHABLE_SECONDS

    def _in_clear(self, *urls: str) -> bool:
        """Whether presigned URLs would move a TLS client's bytes in clear: then the
        store is out of its reach, for a while, as one it cannot connect to."""
        if not self._tls_only or all(urlsplit(url).scheme == "https" for url in urls):
            return False
        self._store_fell_back(_direct.Unreachable("the store is not https", lasting=True))
        return True

    async def _ticket(self, method: Any, request: Any, timeout: Any, metadata: Any) -> Any:
        """The ticket call's answer; None when the server offers no direct transfer, or
        not while it stops (this transfer streams, the next asks again)."""
        try:
            return await self._transport.unary(method, request, timeout=timeout, metadata=metadata)
        except UnavailableError as error:
            if error.reason == SHUTTING_DOWN:
                return None
            raise
        except (FailedPreconditionError, UnimplementedError) as error:
            if isinstance(error, UnimplementedError) or error.reason == NO_DIRECT:
                self.offer.withdraw()
                return None
            raise

    async def upload(self, upload: Upload) -> ObjectInfo | None:
        """The upload over the byte endpoint; None when it cannot be reached (the caller
        streams instead, under the same request id)."""
        stream, size, expected, owned = open_source(upload.source)
        try:
            header = upload.header(self._transport.project, size, expected)
            reply = await self._ticket(
                self._stub.CreateUploadTicket,
                proto(api.CreateUploadTicketRequest, header=header, accept_presigned=True),
                upload.timeout,
                upload.metadata,
            )
            if reply is None:
                return None
            if reply.HasField("object"):  # this request id published it already
                return await _published_already(stream, expected, reply.object)
            if reply.HasField("parts"):
                return await self._upload_presigned(header, upload, reply.parts)
            endpoint = self._endpoint(reply.ticket)
            if endpoint is None:
                return None
            sent, start = upload.counted.from_thread(upload.start), stream.tell()
            try:
                answer = await _cut_when_cancelled(
                    functools.partial(_direct.upload, endpoint, stream, sent)
                )
            except _direct.Unreachable as error:
                self._fell_back(endpoint, error)
                return None
            published = _object_answered(answer, upload.path)
            if stream.tell() == start:  # answered before the body: published meanwhile
                return await _published_already(stream, expected, published)
            return object_from_proto(published)
        finally:
            if owned:
                stream.close()

    async def _upload_presigned(
        self, header: api.UploadHeader, upload: Upload, parts: api.PresignedParts
    ) -> ObjectInfo | None:
        """The upload's parts PUT to the object store, then published by the service;
        None when the store cannot be reached (the caller streams instead). An upload
        that ends otherwise (failed, cancelled, or streamed instead) is given up."""
        sent = upload.counted.from_thread(upload.start)
        try:
            published = await self._send_and_complete(
                header, upload.source, parts, sent, upload.timeout, upload.metadata
            )
        except BaseException:
            await self._give_up(header, parts, upload.metadata)
            raise
        if published is None:  # streamed instead: this upload is never completed
            await self._give_up(header, parts, upload.metadata)
        return published

    async def _send_and_complete(
        self,
        header: api.UploadHeader,
        source: Source,
        parts: api.PresignedParts,
        sent: Callable[[int], None],
        timeout: float | None,
        metadata: Metadata,
    ) -> ObjectInfo | None:
        """PUTs the parts, then completes the upload; None when the store cannot be
        reached (the caller streams instead)."""
        if not isinstance(source, str | os.PathLike | bytes | bytearray | memoryview):
            raise TypeError("parts are read by position: from a local file or bytes")
        if self._in_clear(*parts.part_urls):
            return None
        try:
            etags, sha256 = await _stopped_when_cancelled(
                functools.partial(
                    _presigned.upload_source,
                    source,
                    header.expected_size,
                    parts.part_size,
                    list(parts.part_urls),
                    sent,
                    max(1, self._connections()),
                )
            )
        except _direct.Unreachable as error:
            self._store_fell_back(error)
            return None
        request = proto(
            api.CompleteUploadTicketRequest,
            project=header.project,
            path=header.path,
            upload=parts.upload,
            etags=etags,
            size=header.expected_size,
            sha256=sha256,
        )
        return await self._complete_upload(request, timeout, metadata)

    async def _give_up(
        self, header: api.UploadHeader, parts: api.PresignedParts, metadata: Metadata
    ) -> None:
        """AbortUploadTicket, so that the upload's parts leave the store now rather than
        with the janitor a day later. Best effort: whatever it meets (an older server,
        a completion still holding the upload, an outage) is left to the janitor, and
        the error that ended the upload is the one raised."""
        request = proto(
            api.AbortUploadTicketRequest,
            project=header.project,
            path=header.path,
            upload=parts.upload,
        )
        with contextlib.suppress(Exception):
            await self._transport.unary(
                self._stub.AbortUploadTicket, request, timeout=ABORT_SECONDS, metadata=metadata
            )

    async def _complete_upload(
        self,
        request: api.CompleteUploadTicketRequest,
        timeout: float | None,
        metadata: Metadata,
    ) -> ObjectInfo:
        """CompleteUploadTicket, which reads the whole object back: by default its
        deadline grows with the size. Transport sends it again after UNAVAILABLE
        (its resends); here it is sent again alone (under the same request id, so
        it publishes once) when the server was out of reach still, timed out, found an
        earlier attempt still completing, or found the server completing as many
        uploads as it may. A completion that failed for good raises CompletionFailed:
        its parts are in the store, and sending them all again would not help.
        """
        if timeout is None:
            timeout = COMPLETION_SECONDS + request.size / COMPLETION_BYTES_PER_SECOND
        waits, busy_waits = iter(UPLOAD_RETRY_WAITS), backoff(*BUSY_BACKOFF_SECONDS)
        loop = asyncio.get_running_loop()
        # Refusals (ABORTED, RESOURCE_EXHAUSTED) are waited out for as long as one
        # attempt may take, in all; then the last one is raised.
        held_until: float | None = None
        while True:
            try:
                reply = await self._transport.unary(
                    self._stub.CompleteUploadTicket, request, timeout=timeout, metadata=metadata
                )
                return object_from_proto(reply.object)
            except UnavailableError as error:
                # The server out of reach past the channel's own retries (0.7 s: one
                # restarting takes longer), or stopping, is tried again as a deadline
                # passed is. Its store out of reach (another reason) is not: the
                # channel's 4 attempts read the object back 4 times already.
                resent = not error.reason or error.reason == SHUTTING_DOWN
                wait = next(waits, None) if resent else None
                if wait is None:
                    raise CompletionFailed.of(error) from error
                await asyncio.sleep(wait)
            except AbortedError as error:
                if error.reason != BEING_COMPLETED:
                    raise
                # An attempt that timed out here still reads the object back there: it
                # is waited for as long as one attempt may take, then answered.
                held_until = held_until or loop.time() + timeout
                if loop.time() >= held_until:
                    raise
                await asyncio.sleep(BEING_COMPLETED_POLL_SECONDS)
            except ResourceExhaustedError as error:
                if error.reason != COMPLETIONS_BUSY:
                    raise
                held_until = held_until or loop.time() + timeout
                if loop.time() >= held_until:
                    raise
                await asyncio.sleep(next(busy_waits))
            except DeadlineExceededError:
                wait = next(waits, None)
                if wait is None:
                    raise
                await asyncio.sleep(wait)

    async def download(
        self,
        info: ObjectInfo,
        temporary: Path,
        counted: Meter,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> bool:
        """Fetches the object over the byte endpoint, or from the object store through
        a presigned URL (S3), into temporary, checked against the sha256 its ticket's
        answer names; False when it cannot (the caller streams)."""
        request = proto(
            api.CreateDownloadTicketRequest,
            project=self._transport.project,
            path=info.path,
            accept_presigned=True,
        )
        reply = await self._ticket(self._stub.CreateDownloadTicket, request, timeout, metadata)
        if reply is None:
            return False
        received = counted.from_thread(counted.done)
        fetch = self._fetch_from_store if reply.url else self._fetch_from_endpoint
        sha256 = await fetch(reply, temporary, received)
        if sha256 is None:
            return False
        await asyncio.to_thread(check_length, temporary, reply.object.size)
        if sha256 != reply.object.sha256:
            raise DataLossError(
                f"{info.path!r} arrived with sha256 {sha256}, but was stored with "
                f"{reply.object.sha256}",
                reason="CHECKSUM_MISMATCH",
                metadata={"sha256": sha256, "expected_sha256": reply.object.sha256},
            )
        return True

    async def _fetch_from_store(
        self,
        reply: api.CreateDownloadTicketResponse,
        temporary: Path,
        received: Callable[[int], None],
    ) -> str | None:
        """The sha256 of what the presigned URL gave; None when the store is out of reach."""
        if self._in_clear(reply.url):
            return None
        try:
            return await _stopped_when_cancelled(
                functools.partial(
                    _presigned.download,
                    reply.url,
                    str(temporary),
                    reply.object.size,
                    received,
                    max(1, self._connections()),
                )
            )
        except _direct.Unreachable as error:
            self._store_fell_back(error)
            return None

    async def _fetch_from_endpoint(
        self,
        reply: api.CreateDownloadTicketResponse,
        temporary: Path,
        received: Callable[[int], None],
    ) -> str | None:
        """The sha256 of what the byte endpoint sent; None when it is out of reach."""
        endpoint = self._endpoint(reply.ticket)
        if endpoint is None:
            return None
        try:
            with file_for(temporary, reply.object.size) as out:
                return await _cut_when_cancelled(
                    functools.partial(_direct.download, endpoint, out, reply.object.size, received)
                )
        except _direct.Unreachable as error:
            self._fell_back(endpoint, error)
            return None


async def _cut_when_cancelled(transfer: Callable[[_direct.Cut], _T]) -> _T:
    """transfer(cut) in a thread, whose connection is cut when the caller is cancelled
    (its timeout passed), then waited for: its thread ends at once, not when its socket
    idles out, and before the caller closes the files it reads or writes (a download's
    writer thread wrote into a closed descriptor, which another file had taken)."""
    cut = _direct.Cut()
    moving = asyncio.ensure_future(asyncio.to_thread(transfer, cut))
    try:
        return await asyncio.shield(moving)
    finally:
        cut.cut()
        await asyncio.wait({moving})  # at once once cut (a disk write under way ends)
        if not moving.cancelled():
            moving.exception()  # the cut's, which no one waits for: retrieved


async def _stopped_when_cancelled(transfer: Callable[..., _T]) -> _T:
    """transfer(stop=...) in a thread. A thread cannot be cancelled: when the caller is,
    stop tells the transfer's threads to end at their next chunk rather than move the
    rest of the object unseen."""
    stop = threading.Event()
    try:
        return await asyncio.to_thread(transfer, stop=stop)
    finally:
        stop.set()
