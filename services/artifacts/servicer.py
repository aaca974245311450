"""gRPC servicer of the artifact service: streams bytes between clients and backends."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Generator
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeAlias

import grpc
from google.protobuf.duration_pb2 import Duration

from cairn.artifacts.v1 import artifacts_pb2 as pb
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.artifacts.v1 import artifacts_service_pb2_grpc

from ..common import access, messages, paging, timestamps
from ..common import validation as common
from ..common.errors import (
    Aborted,
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
    Unavailable,
    invalid_field,
)
from ..common.idempotency import RequestId, after_commit
from ..common.service import Resources
from . import backends, blobs, completions, pace, paths, repeats, slots, threads
from .janitor import janitor_for
from .leases import CompletionLeases
from .presigned import PresignedTransfers, upload_of
from .store import (
    UPLOAD_EXPIRED,
    ObjectStore,
    PendingUpload,
    Removed,
    StoredObject,
    already_exists,
    bytes_missing,
)
from .streams import MAX_CHUNK_BYTES, VerifyingReader, read_ahead, too_large_to_stream
from .tickets import Ticket
from .transfers import DirectTransfers

Context: TypeAlias = grpc.aio.ServicerContext
MAX_LIST_PAGE = 1000
DEFAULT_PRESIGN_SECONDS = 3600
DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_CONTENT_TYPE_LENGTH = 255
# Opening an object that is replaced this many times in a row gives up (ABORTED).
OPEN_ATTEMPTS = 3
_SHA256_HEX = frozenset("0123456789abcdef")
# The verdict on an upload's header, sent as initial metadata; the client streams its
# chunks only after "accepted" (the same name is in the client's transport).
STREAM_VERDICT_HEADER = "x-cairn-stream"
# The longest an upload whose stream ended too soon waits for its client's cancel, should
# that be why it ended (_ended_too_soon): the cancel comes a few turns of the event loop
# after the stream's end, in the same process, a ceiling for a busy one.
CANCEL_ARRIVAL_SECONDS = 0.5


# Room in a Download message for what is not its chunk: the object's description (a
# path of at most 1 KiB, its URIs, hash and content type) and the framing.
DOWNLOAD_FRAMING_BYTES = 64 * 1024
# Streamed downloads at once in a process. One holds the chunk it sends and the one read
# ahead (4 MiB each), and the message it writes in three copies (its field, the bytes
# serialized, and gRPC's): 24 MiB when its client stops reading (25 measured). So they
# are sized from the byte endpoint's budget of 512 MiB (direct.py); one more waits for a
# slot holding its request alone, and a client that stops reading gives its slot up once
# it falls behind the pace (pace.py).
DOWNLOAD_BYTES = 6 * blobs.CHUNK
MAX_DOWNLOADS = 512 * 1024 * 1024 // DOWNLOAD_BYTES  # 21
# A download's call outlives its handler once cut for falling behind: gRPC's Python
# server cannot cancel a call, so it ends only when its client takes the message gRPC
# was sending or goes away, holding about 7 MiB (measured) until then. Calls count
# until they end, at most twice the slots, so that clients which stop reading and stay
# connected cannot pile those up either (150 MiB at most).
MAX_DOWNLOAD_CALLS = 2 * MAX_DOWNLOADS


class ArtifactServicer(artifacts_service_pb2_grpc.ArtifactServiceServicer):
    def __init__(self, resources: Resources, backend: backends.Backend | None = None) -> None:
        self._config = resources.config
        self._stopping = resources.stopping
        # The bytes a Download message carries: what the store reads at once, or less
        # when the server's largest message (CAIRN_MAX_MESSAGE_BYTES, 1 MiB at least)
        # would not hold them beside the object's description in the first.
        self._download_chunk = min(
            blobs.CHUNK, resources.config.max_message_bytes - DOWNLOAD_FRAMING_BYTES
        )
        self._page_bytes = resources.config.max_message_bytes - paging.RESPONSE_RESERVE
        self._backend = backend or backends.from_config(resources.config)
        self._objects = ObjectStore(resources.pool)
        self._janitor = janitor_for(resources, self._backend)
        # A streamed upload takes a writer thread before it is accepted, when its client
        # starts to send: past UPLOAD_THREADS, uploads wait holding their header alone.
        # Accepted first, each held the chunks its client sent while it waited for a
        # thread (about 2 MB a call in gRPC's window and the writer's queue), without
        # bound in number.
        self._writers = asyncio.Semaphore(threads.UPLOAD_THREADS)
        self._downloads = asyncio.Semaphore(MAX_DOWNLOADS)
        self._download_calls = asyncio.Semaphore(MAX_DOWNLOAD_CALLS)
        self._direct = DirectTransfers(
            resources, self._backend, self._objects, self._janitor, self._info, self._discard
        )
        self._completions = completions.of(resources)
        # The confirmations reading back in this process, by upload.
        self._confirming: dict[uuid.UUID, asyncio.Task[Any]] = {}
        self._presigned = PresignedTransfers(
            resources.config,
            self._backend,
            self._objects,
            CompletionLeases(resources.pool, self._objects),
            self._janitor,
            self._completions,
        )

    def _check_direct(self, accept_presigned: bool) -> bool:
        """Whether the transfer goes through presigned URLs (S3) rather than the byte
        endpoint; raises as `DirectTransfers.check_offered` when neither is offered."""
        if self._presigned.offered(accept_presigned):
            return True
        self._direct.check_offered()
        return False

    async def CreateUploadTicket(
        self, request: api.CreateUploadTicketRequest, context: Context
    ) -> api.CreateUploadTicketResponse:
        header = request.header
        project = common.project(header.project)
        path = paths.new_object_path(header.path)
        expected_sha256 = _sha256(header.expected_sha256, "header.expected_sha256")
        content_type = _content_type(header.content_type) or DEFAULT_CONTENT_TYPE
        _check_size(header.expected_size)
        presigned = self._check_direct(request.accept_presigned)
        request_id = RequestId.of(context)
        taken = await self._in_the_way(project, path, header.overwrite)
        done = await self._objects.published_by(project, path, request_id)
        if done is not None:
            repeats.check(done, expected_sha256, header.expected_size, content_type)
            return api.CreateUploadTicketResponse(object=self._info(done))
        if taken:
            raise already_exists(path)
        if presigned:
            parts = await self._presigned.begin(
                project,
                path,
                header.overwrite,
                content_type,
                header.expected_size,
                expected_sha256,
            )
            return api.CreateUploadTicketResponse(parts=parts)
        ticket = self._direct.ticket(
            method="PUT",
            project=project,
            path=path,
            size=header.expected_size,
            sha256=expected_sha256,
            overwrite=header.overwrite,
            content_type=content_type,
            **Ticket.request_claims(request_id),
        )
        return api.CreateUploadTicketResponse(ticket=ticket)

    async def CreateDownloadTicket(
        self, request: api.CreateDownloadTicketRequest, context: Context
    ) -> api.CreateDownloadTicketResponse:
        project = common.project(request.project)
        path = paths.object_path(request.path)
        presigned = self._check_direct(request.accept_presigned)
        stored = await self._objects.get(project, path)
        if presigned:
            url = await self._presigned.download_url(stored)
            return api.CreateDownloadTicketResponse(url=url, object=self._info(stored))
        ticket = self._direct.ticket(
            method="GET", project=project, path=path, key=stored.storage_key, size=stored.size
        )
        return api.CreateDownloadTicketResponse(ticket=ticket, object=self._info(stored))

    async def CompleteUploadTicket(
        self, request: api.CompleteUploadTicketRequest, context: Context
    ) -> api.CompleteUploadTicketResponse:
        project = common.project(request.project)
        path = paths.object_path(request.path)
        sha256 = _sha256(request.sha256, "sha256")
        request_id = RequestId.of(context)
        done = await self._objects.published_by(project, path, request_id)
        if done is None:
            try:
                stored = await self._presigned.complete(project, path, request, sha256, request_id)
                return api.CompleteUploadTicketResponse(object=self._info(stored))
            except (NotFound, Aborted) as gone:
                # Gone: another completion of this request id may have published since
                # the check above (its lease ended with it), or while this one held a
                # lease that lapsed (UPLOAD_EXPIRED then): what a repeat answers.
                if isinstance(gone, Aborted) and gone.reason != UPLOAD_EXPIRED:
                    raise
                done = await self._objects.published_by(project, path, request_id)
                if done is None:
                    raise
        # A repeat of the completion that published it: the same size and sha256...
        repeats.check(done, sha256, request.size)
        if await self._objects.pending(project, path, upload_of(request.upload), kind="parts"):
            raise repeats.request_id_reused(done)  # ...naming the upload it spent
        return api.CompleteUploadTicketResponse(object=self._info(done))

    async def AbortUploadTicket(
        self, request: api.AbortUploadTicketRequest, context: Context
    ) -> api.AbortUploadTicketResponse:
        project = common.project(request.project)
        path = paths.object_path(request.path)
        await self._presigned.abort(project, path, request.upload)
        return api.AbortUploadTicketResponse()

    async def Upload(
        self, request_iterator: AsyncIterator[api.UploadRequest], context: Context
    ) -> api.UploadResponse:
        stream = aiter(request_iterator)
        accepted = await self._accept(stream, context)
        if isinstance(accepted, StoredObject):  # a repeat of an upload that published
            return api.UploadResponse(object=self._info(accepted))
        header, upload, expected_sha256 = accepted
        try:
            async with slots.held(self._writers, self._stopping):
                await context.send_initial_metadata(((STREAM_VERDICT_HEADER, "accepted"),))
                try:
                    reader = await self._written(stream, header, upload, expected_sha256)
                except Exception as error:
                    if expired := await self._objects.expired_instead(upload):
                        raise expired from error
                    raise
            await access.admit_again()  # its caller's key or role may be gone since
            stored, replaced = await self._objects.publish(
                upload,
                reader.size,
                reader.sha256,
                upload.content_type,
                request_id=RequestId.of(context),
            )
        except BaseException:
            await self._discard(upload)
            raise
        await self._janitor.collect([replaced] if replaced else [])
        return api.UploadResponse(object=self._info(stored))

    async def _written(
        self,
        stream: AsyncIterator[api.UploadRequest],
        header: api.UploadHeader,
        upload: PendingUpload,
        expected_sha256: str,
    ) -> VerifyingReader:
        """The upload's bytes written to the store by a writer thread, as the client
        sends them, and checked to their end; the reader that checked them."""
        reader = VerifyingReader(
            asyncio.get_running_loop(),
            header.expected_size,
            expected_sha256,
            self._backend.write_limit(header.expected_size),
        )
        writing = threads.start_upload(
            self._backend.write,
            upload.storage_key,
            reader,
            upload.content_type,
            header.expected_size,
        )
        await _pump(stream, reader, writing, self._stopping)
        await writing
        if not reader.verified:  # never publish what was not checked to the end
            raise invalid_field("finish", "the upload ended before its finish message")
        return reader

    async def _accept(
        self, stream: AsyncIterator[api.UploadRequest], context: Context
    ) -> tuple[api.UploadHeader, PendingUpload, str] | StoredObject:
        """Checks the header and records the upload, or tells the client not to send its
        chunks: refused, or done already (a repeat of the call that published the object
        at path: that object is returned). Refusing an existing path here only spares a
        useless transfer: publishing decides, as another upload may publish meanwhile.
        A repeat whose header holds no sha256 sends its chunks, which must be the bytes
        of that object: another upload under its request id is REQUEST_ID_REUSED."""
        try:
            header = await _header(stream)
            project = common.project(header.project)
            path = paths.new_object_path(header.path)
            expected_sha256 = _sha256(header.expected_sha256, "header.expected_sha256")
            content_type = _content_type(header.content_type) or DEFAULT_CONTENT_TYPE
            _check_size(header.expected_size)
            self._check_streamable(header.expected_size)
            taken = await self._in_the_way(project, path, header.overwrite)
            done = await self._objects.published_by(project, path, RequestId.of(context))
            if done is not None:
                repeats.check(done, expected_sha256, header.expected_size, content_type)
            elif taken:
                raise already_exists(path)
            else:
                upload = await self._objects.begin(project, path, header.overwrite, content_type)
        except Exception:
            await _refuse(stream, context)
            raise
        if done is None:
            return header, upload, expected_sha256
        if expected_sha256:
            await _refuse(stream, context, verdict="done")
            return done
        await self._check_bytes_repeated(stream, context, done)
        return done

    async def _check_bytes_repeated(
        self, stream: AsyncIterator[api.UploadRequest], context: Context, done: StoredObject
    ) -> None:
        """Reads an upload's bytes as any upload's, storing none, and refuses them unless
        they are those of done, which its request id published (see _accept)."""
        # Its reader takes a writer thread as an upload does.
        async with slots.held(self._writers, self._stopping):
            await context.send_initial_metadata(((STREAM_VERDICT_HEADER, "accepted"),))
            reader = VerifyingReader(asyncio.get_running_loop(), 0, "")
            writing = threads.start_upload(repeats.read_to_end, reader, done)
            await _pump(stream, reader, writing, self._stopping)
            await writing
        repeats.check(done, reader.sha256, reader.size)

    def _check_streamable(self, size: int) -> None:
        if size > self._backend.write_limit(size):
            raise too_large_to_stream(size, self._backend.write_limit(size))

    async def _in_the_way(self, project: str, path: str, overwrite: bool) -> bool:
        """Whether an object at path refuses an upload that may not overwrite it. Asked
        before whether the call's request id published it: a first try that publishes in
        between is then found as this repeat's own, not as an object in its way."""
        return not overwrite and await self._objects.exists(project, path)

    async def _discard(self, upload: PendingUpload) -> None:
        """Collects the bytes of an upload that did not publish. When the database
        cannot say whether it did, nothing is removed here: the janitor decides later."""
        try:
            garbage = await self._objects.abandon(upload)
        except Exception:
            return
        await self._janitor.collect(garbage)

    async def Download(self, request: api.DownloadRequest, context: Context) -> None:
        # Written, not yielded: a write that waits on its client is bounded by the pace,
        # and the bytes read ahead are let go as soon as the stream ends early.
        project = common.project(request.project)
        path = paths.object_path(request.path)
        await slots.taken(self._download_calls, self._stopping)
        context.add_done_callback(lambda _: self._download_calls.release())
        async with slots.held(self._downloads, self._stopping):
            stored, chunks = await self._open(project, path, request.offset, request.length)
            info: pb.ObjectInfo | None = self._info(stored)
            if chunks is None:  # an empty object or range: only say what it is
                await context.write(api.DownloadResponse(object=info))
                return
            progress = pace.Pace()
            async with contextlib.aclosing(read_ahead(chunks)) as read:
                async for chunk in access.still_admitted(read):
                    for piece in _pieces(chunk, self._download_chunk):
                        await _sent(
                            context, api.DownloadResponse(object=info, chunk=piece), progress
                        )
                        progress.moved += len(piece)
                        info = None

    async def _open(
        self, project: str, path: str, offset: int, length: int
    ) -> tuple[StoredObject, Generator[bytes, None, None] | None]:
        """The object at path and its bytes in the range, opened (None when the range is
        empty). Bytes that vanished since the row was read (the object was replaced or
        deleted meanwhile) send it back to the row; an open file or stream keeps its
        bytes readable to the end."""
        stored = await self._objects.get(project, path)
        for _ in range(OPEN_ATTEMPTS):
            start, count = _range(offset, length, stored.size)
            if not count:
                return stored, None
            try:
                opened = await threads.in_store(
                    self._backend.open, stored.storage_key, start, count
                )
                return stored, _all_of(opened, count, path)
            except backends.MissingBytes:
                latest = await self._objects.get(project, path)
                if latest.storage_key == stored.storage_key:
                    raise bytes_missing(path) from None
                stored = latest
        raise Aborted("OBJECT_CHANGED", f"{path!r} kept changing while it was opened; try again")

    async def StatObject(
        self, request: api.StatObjectRequest, context: Context
    ) -> api.StatObjectResponse:
        stored = await self._objects.get(
            common.project(request.project), paths.object_path(request.path)
        )
        return api.StatObjectResponse(object=self._info(stored))

    async def ListObjects(
        self, request: api.ListObjectsRequest, context: Context
    ) -> api.ListObjectsResponse:
        listing = await self._objects.list(
            common.project(request.project),
            paths.prefix(request.prefix),
            request.recursive,
            paging.page_size(request.page_size, MAX_LIST_PAGE, MAX_LIST_PAGE),
            request.page_token,
        )
        entries, token = paging.fitted(listing, self._entry, self._page_bytes)
        return api.ListObjectsResponse(
            objects=[e for e in entries if not isinstance(e, str)],
            prefixes=[e for e in entries if isinstance(e, str)],
            next_page_token=token,
        )

    async def DeleteObject(
        self, request: api.DeleteObjectRequest, context: Context
    ) -> api.DeleteObjectResponse:
        project = common.project(request.project)
        if request.recursive:
            path = paths.directory(request.path)
        else:
            path = paths.object_path(request.path)
        removed = await self._objects.remove(project, path, request.recursive)
        if not removed.count and not request.recursive:
            raise NotFound("OBJECT_NOT_FOUND", f"no object at {path!r}", metadata={"path": path})
        # Only once the removal is committed: a repeat of this call may be recorded.
        await after_commit(lambda: self._remove_bytes(removed))
        return api.DeleteObjectResponse(deleted_count=removed.count)

    async def _remove_bytes(self, removed: Removed) -> None:
        """Removes the bytes of what a delete unpublished: within the call for one piece
        of objects, past that beside the calls, so that a call does not last as long as
        removing a large directory's bytes takes."""
        if len(removed.keys) == removed.count:
            await self._janitor.collect(removed.keys)
        else:
            self._janitor.collect_soon()

    async def CreatePresignedUrl(
        self, request: api.CreatePresignedUrlRequest, context: Context
    ) -> api.CreatePresignedUrlResponse:
        project = common.project(request.project)
        if request.method == pb.PRESIGN_METHOD_PUT:
            path = paths.new_object_path(request.path)
        else:
            path = paths.object_path(request.path)
        expires = presign_expiry(request.expires_in, self._config.presign_max_seconds)
        content_type = _content_type(request.content_type)
        if not self._backend.supports_presign:
            raise _presign_unsupported()
        if request.method == pb.PRESIGN_METHOD_GET:
            stored = await self._objects.get(project, path)
            # Cut again as it is signed: the key's time ran on while the database answered.
            expires = access.within_key(expires)
            url = await threads.in_store(self._backend.presign, stored.storage_key, "GET", expires)
            return api.CreatePresignedUrlResponse(url=url)
        if request.method != pb.PRESIGN_METHOD_PUT:
            raise invalid_field("method", "GET or PUT")
        if not request.overwrite and await self._objects.exists(project, path):
            raise already_exists(path)
        # A repeat of this call (its answer was lost) gets the same upload, signed anew.
        upload = await self._objects.begin(
            project,
            path,
            request.overwrite,
            content_type,
            url_expires=expires,
            request_id=RequestId.of(context),
        )
        expires = access.within_key(expires)  # cut again as it is signed, as above
        url = await threads.in_store(self._backend.presign, upload.storage_key, "PUT", expires)
        return api.CreatePresignedUrlResponse(
            url=url,
            headers={"Content-Type": content_type} if content_type else {},
            upload_id=upload.upload_id.hex,
        )

    async def ConfirmUpload(
        self, request: api.ConfirmUploadRequest, context: Context
    ) -> api.ConfirmUploadResponse:
        """Publishes what a client put through a presigned URL. The bytes are first
        copied to a key no URL names, and checked there: a URL still valid after this
        can never change what was published."""
        project = common.project(request.project)
        path = paths.object_path(request.path)
        expected = _sha256(request.expected_sha256, "expected_sha256")
        if not self._backend.supports_presign:
            raise _presign_unsupported()
        upload_id = _upload_id(request.upload_id)
        if (earlier := self._confirming.get(upload_id)) is not None:
            # A repeat (the caller of the first left) waits for the read-back under way
            # rather than start another, of up to 5 GiB in another slot of the cap;
            # then it answers as after it. Within this process: one elsewhere reads
            # back again, as a repeat reaching another replica of a completion would;
            # so do confirmations that arrive together, or repeats woken together by
            # a first attempt that failed (each within the cap).
            await asyncio.wait({earlier})
            return await self.ConfirmUpload(request, context)
        done = await self._objects.published_by(project, path, RequestId.of(context))
        if done is not None:  # a repeat of the confirmation that published it...
            repeats.check(done, expected)
            if await self._objects.pending(project, path, upload_id, kind="put"):
                raise repeats.request_id_reused(done)  # ...names the upload it spent
            return api.ConfirmUploadResponse(object=self._info(done))
        upload = await self._objects.upload(project, path, upload_id, kind="put")
        # Its read-back is a completion's (a copy, then a digest, of up to 5 GiB on a
        # store thread others need, which cannot be stopped): it runs as one, to its
        # end whether its caller waits or not, within the same cap.
        request_id = RequestId.of(context)
        stored, replaced = await self._completions.run(
            lambda caller: self._confirm(upload, expected, request_id, caller)
        )
        await self._janitor.collect([key for key in (replaced, upload.storage_key) if key])
        return api.ConfirmUploadResponse(object=self._info(stored))

    async def _confirm(
        self,
        upload: PendingUpload,
        expected: str,
        request_id: RequestId | None,
        caller: completions.Caller,
    ) -> tuple[StoredObject, str | None]:
        """The confirmed upload published from a sealed copy, and the key it replaced;
        known to repeats as under way until it ends."""
        # Under way once it has its slot: a repeat does not wait out another's wait.
        async with self._presigned.slots.taken(), self._under_way(upload.upload_id):
            sealed = await self._objects.begin(
                upload.project, upload.path, upload.overwrite, upload.content_type
            )
            try:
                stored_type = await self._seal(upload, sealed.storage_key)
                sha256, size = await threads.in_store(self._backend.digest, sealed.storage_key)
                _check_put(upload, expected, sha256, stored_type)
                content_type = upload.content_type or stored_type or DEFAULT_CONTENT_TYPE
                await access.admit_again()  # its caller's key or role may be gone since
                return await self._objects.publish(
                    sealed, size, sha256, content_type, consumes=upload, request_id=request_id
                )
            except BaseException as error:
                await self._discard(sealed)
                # A verdict on what was sent spends the URL's upload, for a caller still
                # there to hear it; anything else (nothing sent yet, a timeout, an
                # outage) leaves it to be confirmed again, as does a verdict no one
                # heard (its repeat hears it).
                verdict = isinstance(error, DataLoss | FailedPrecondition | AlreadyExists)
                if verdict and caller.waiting:
                    await self._discard(upload)
                raise

    @contextlib.asynccontextmanager
    async def _under_way(self, upload_id: uuid.UUID) -> AsyncIterator[None]:
        """The current task known as the confirmation of the upload under way, which a
        repeat waits for (ConfirmUpload), until the block ends."""
        running = asyncio.current_task()
        assert running is not None  # a task of Completions.run
        self._confirming[upload_id] = running
        try:
            yield
        finally:
            if self._confirming.get(upload_id) is running:
                del self._confirming[upload_id]

    async def _seal(self, upload: PendingUpload, key: str) -> str:
        try:
            return await threads.in_store(self._backend.copy, upload.storage_key, key)
        except backends.MissingBytes:
            # Gone with its upload (expired, or its directory collected, under this
            # call), the URL is of no use: told as a confirmation after that is.
            await self._objects.upload(upload.project, upload.path, upload.upload_id, kind="put")
            raise NotFound(
                "OBJECT_NOT_FOUND",
                f"nothing was uploaded to {upload.path!r} yet",
                metadata={"path": upload.path},
            ) from None

    def _entry(self, entry: StoredObject | str) -> pb.ObjectInfo | str:
        return entry if isinstance(entry, str) else self._info(entry)

    def _info(self, stored: StoredObject) -> pb.ObjectInfo:
        return pb.ObjectInfo(
            project=stored.project,
            path=stored.path,
            size=stored.size,
            sha256=stored.sha256,
            content_type=stored.content_type,
            create_time=timestamps.to_proto(stored.create_time),
            update_time=timestamps.to_proto(stored.update_time),
            uri=self._backend.uri(stored.storage_key),
        )


async def _refuse(
    stream: AsyncIterator[api.UploadRequest], context: Context, verdict: str = "rejected"
) -> None:
    """Tells the client not to send its chunks ("rejected", or "done" for a repeat of an
    upload already published), then reads what it still sends until it half-closes, so
    the answer does not overtake a write (which grpc would report as INTERNAL)."""
    await context.send_initial_metadata(((STREAM_VERDICT_HEADER, verdict),))
    await messages.drain(stream)


async def _header(stream: AsyncIterator[api.UploadRequest]) -> api.UploadHeader:
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


async def _pump(
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
                    messages, reader, writing, _sha256(message.finish.sha256, "finish.sha256")
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
            raise _stalled("the upload", "sent nothing", "upload again") from None
        progress.moved += len(message.chunk)
        yield message


async def _sent(context: Context, message: api.DownloadResponse, progress: pace.Pace) -> None:
    """message written to the stream, once the client has taken what came before, unless
    the download falls behind the pace first: a client that stops reading would hold
    its slot and the chunks read for it (of MAX_DOWNLOADS) for ever."""
    try:
        await progress.within(context.write(message))
    except TimeoutError:
        raise _stalled(
            "the download", "took nothing", "download again, reading the stream as it arrives"
        ) from None


def _stalled(transfer: str, idle: str, remedy: str) -> ResourceExhausted:
    return ResourceExhausted(
        "STREAM_STALLED",
        f"{transfer} fell behind {pace.MIN_BYTES_PER_SECOND // 1024} KiB a second past "
        f"its first {pace.IDLE_SECONDS:g} s, or {idle} for that long; {remedy}",
    )


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


def _check_size(expected_size: int) -> None:
    if not 0 <= expected_size <= blobs.MAX_OBJECT_BYTES:
        raise invalid_field(
            "expected_size", f"must be 0 (unknown) to {blobs.MAX_OBJECT_BYTES} bytes"
        )


def _range(offset: int, length: int, size: int) -> tuple[int, int]:
    if offset < 0 or length < 0:
        raise invalid_field("offset" if offset < 0 else "length", "must not be negative")
    if offset > size:
        raise OutOfRange("OFFSET_PAST_END", f"offset {offset} is past the end ({size} bytes)")
    return offset, min(length or size - offset, size - offset)


def _sha256(value: str, field: str) -> str:
    """A sha256 as compared and recorded: lowercase hex ("" when none was sent)."""
    value = value.lower()
    if value and (len(value) != 64 or not set(value) <= _SHA256_HEX):
        raise invalid_field(field, "must be 64 hexadecimal characters")
    return value


def presign_expiry(requested: Duration, limit_seconds: int) -> timedelta:
    """How long a presigned URL works, in whole seconds (S3 signs seconds): as asked,
    rounded up, at most the limit and never past the caller's key; 0 means an hour, or
    less: the limit, or what the key has left."""
    if requested.nanos >= 1_000_000_000:  # no Duration: refused as every call refuses it
        raise invalid_field("expires_in", "nanos must be less than one second")
    seconds = requested.seconds + (requested.nanos > 0)
    if requested.seconds < 0 or requested.nanos < 0 or seconds > limit_seconds:
        raise invalid_field(
            "expires_in",
            f"must be positive and at most {limit_seconds} seconds (CAIRN_PRESIGN_MAX_SECONDS)",
        )
    if not seconds:
        return access.within_key(timedelta(seconds=min(DEFAULT_PRESIGN_SECONDS, limit_seconds)))
    _check_within_key(timedelta(seconds=seconds))
    return timedelta(seconds=seconds)


def _check_within_key(lifetime: timedelta) -> None:
    """Refuses a URL asked to work after the caller's key expires: a URL is a credential
    derived from the key, and, as for a key the key creates (API_KEY_OUTLIVES_PARENT), a
    refusal rather than a silent cap, so nobody finds out when the URL stops working."""
    expires = access.key_expire_time()
    if expires is not None and datetime.now(UTC) + lifetime > expires:
        raise invalid_field(
            "expires_in",
            f"a URL cannot outlive the API key that asks for it, which expires at "
            f"{expires.isoformat(timespec='seconds')}: ask for a shorter lifetime, or "
            "use a longer-lived key",
        )


def _content_type(value: str) -> str:
    """A media type as HTTP carries it: printable ASCII."""
    if not value:
        return ""
    if not (value.isascii() and value.isprintable()):
        raise invalid_field("content_type", "must be printable ASCII, e.g. 'text/csv'")
    return common.name(value, "content_type", MAX_CONTENT_TYPE_LENGTH)


def _upload_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(hex=value)
    except ValueError:
        raise invalid_field(
            "upload_id", "must be the upload_id CreatePresignedUrl returned"
        ) from None


def _check_put(upload: PendingUpload, expected_sha256: str, sha256: str, content_type: str) -> None:
    if expected_sha256 and sha256 != expected_sha256:
        raise DataLoss(
            "CHECKSUM_MISMATCH",
            f"uploaded content has sha256 {sha256}, not {expected_sha256}",
            metadata={"sha256": sha256, "expected_sha256": expected_sha256},
        )
    if upload.content_type and content_type != upload.content_type:
        raise FailedPrecondition(
            "CONTENT_TYPE_MISMATCH",
            f"the upload was sent as {content_type!r}, but its URL was made for "
            f"{upload.content_type!r}",
            metadata={"content_type": content_type, "expected": upload.content_type},
        )
    if not upload.content_type:  # the PUT's own, held to every upload's rule
        try:
            _content_type(content_type)
        except InvalidArgument:
            raise FailedPrecondition(
                "CONTENT_TYPE_INVALID",
                "the upload was sent with a Content-Type of other than printable ASCII of "
                f"at most {MAX_CONTENT_TYPE_LENGTH} characters; make a URL again and put "
                "the bytes with another, or make it with content_type",
            ) from None


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


def _presign_unsupported() -> FailedPrecondition:
    return FailedPrecondition(
        "PRESIGN_UNSUPPORTED",
        "presigned URLs need the S3 backend; this server stores files locally",
    )


def _pieces(chunk: bytes, most: int) -> Generator[bytes, None, None]:
    """chunk, in pieces of at most `most` bytes (itself when it is no larger)."""
    if len(chunk) <= most:
        yield chunk
        return
    for start in range(0, len(chunk), most):
        yield chunk[start : start + most]
