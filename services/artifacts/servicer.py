"""gRPC servicer of the artifact service: streams bytes between clients and backends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc

from cairn.artifacts.v1 import artifacts_pb2 as pb
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.artifacts.v1 import artifacts_service_pb2_grpc

from ..common import access, paging, timestamps
from ..common import validation as common
from ..common.errors import Aborted, NotFound, invalid_field
from ..common.idempotency import RequestId, after_commit
from ..common.service import Resources
from . import (
    backends,
    blobs,
    budget,
    completions,
    pace,
    paths,
    presigned_urls,
    repeats,
    slots,
    threads,
)
from .batches import FileBatches
from .download_pieces import open_range, pieces, write_at_pace
from .file_reads import FileReads
from .janitor import janitor_for
from .leases import CompletionLeases
from .objects import StoredObject, already_exists
from .presigned import PresignedTransfers, upload_of
from .s3 import S3Backend
from .store import ObjectStore, Removed
from .streams import VerifyingReader, read_ahead, too_large_to_stream
from .tickets import Ticket
from .transfers import DirectTransfers
from .upload_fields import DEFAULT_CONTENT_TYPE, check_size, content_type_field, sha256_field
from .upload_messages import (
    STREAM_VERDICT_HEADER,
    pump,
    read_header,
    refuse,
    to_its_end,
    write_upload,
)
from .uploads import UPLOAD_EXPIRED, PendingUpload

Context: TypeAlias = grpc.aio.ServicerContext
MAX_LIST_PAGE = 1000


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
        # starts to send: past UPLOAD_THREADS, uploads wait for one (at most
        # slots.MAX_WAITING_UPLOADS of them). Accepted first, each held the chunks its
        # client sent while it waited for a thread (about 2 MB a call in gRPC's window
        # and the writer's queue), without bound in number.
        self._writers = asyncio.Semaphore(threads.UPLOAD_THREADS)
        # And one to S3 reserves the memory it holds first (budget.py).
        self._upload_memory = budget.ByteBudget(budget.UPLOAD_BYTES)
        self._admission = slots.UploadAdmission(self._upload_memory, self._writers, self._stopping)
        self._batches = FileBatches(
            self._objects, self._backend, self._janitor, self._admission, self._stopping, self._info
        )
        self._downloads = asyncio.Semaphore(MAX_DOWNLOADS)
        self._file_reads = FileReads(self._objects, self._backend, self._info, self._page_bytes)
        self._download_calls = asyncio.Semaphore(MAX_DOWNLOAD_CALLS)
        self._direct = DirectTransfers(
            resources, self._backend, self._objects, self._janitor, self._info, self._discard
        )
        self._completions = completions.of(resources)
        self._presigned = PresignedTransfers(
            resources.config,
            self._backend,
            self._objects,
            CompletionLeases(resources.pool, self._objects),
            self._janitor,
            self._completions,
        )
        self._confirmations = presigned_urls.Confirmations(
            self._backend, self._objects, self._presigned.slots, self._discard
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
        expected_sha256 = sha256_field(header.expected_sha256, "header.expected_sha256")
        content_type = content_type_field(header.content_type) or DEFAULT_CONTENT_TYPE
        check_size(header.expected_size)
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
        sha256 = sha256_field(request.sha256, "sha256")
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
            async with contextlib.AsyncExitStack() as admitted:
                memory = self._memory_of(header.expected_size)
                await self._admit(admitted, stream, context, memory, upload)
                try:
                    reader = await write_upload(
                        stream, header, upload, expected_sha256, self._backend, self._stopping
                    )
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

    async def UploadFiles(
        self, request: api.UploadFilesRequest, context: Context
    ) -> api.UploadFilesResponse:
        return await self._batches.store(request, RequestId.of(context))

    async def _admit(
        self,
        admitted: contextlib.AsyncExitStack,
        stream: AsyncIterator[api.UploadRequest],
        context: Context,
        memory: int,
        upload: PendingUpload | None = None,
    ) -> None:
        """Takes into admitted what the upload holds (memory bytes, a writer thread), then
        tells its client to send its chunks; or refuses them: UPLOADS_BUSY or
        SHUTTING_DOWN (`slots.UploadAdmission`), or UPLOAD_EXPIRED when the janitor took
        the upload while it waited, as publishing would refuse it after all its bytes
        came (and were written to the store)."""
        try:
            waited = not await admitted.enter_async_context(self._admission.held(memory))
            # Only a wait gives the janitor time to take the upload: no query otherwise.
            if (
                waited
                and upload is not None
                and (expired := await self._objects.expired_instead(upload))
            ):
                raise expired
        except Exception:
            await refuse(stream, context)
            raise
        await context.send_initial_metadata(((STREAM_VERDICT_HEADER, "accepted"),))

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
            header = await read_header(stream)
            project = common.project(header.project)
            path = paths.new_object_path(header.path)
            expected_sha256 = sha256_field(header.expected_sha256, "header.expected_sha256")
            content_type = content_type_field(header.content_type) or DEFAULT_CONTENT_TYPE
            check_size(header.expected_size)
            self._check_streamable(header.expected_size)
            taken = await self._in_the_way(project, path, header.overwrite)
            done = await self._objects.published_by(project, path, RequestId.of(context))
            if done is not None:
                repeats.check(done, expected_sha256, header.expected_size, content_type)
            elif taken:
                raise already_exists(path)
            else:
                self._admission.check_room()  # as _admit would, before any upload begins
                upload = await self._objects.begin(project, path, header.overwrite, content_type)
        except Exception:
            await refuse(stream, context)
            raise
        if done is None:
            return header, upload, expected_sha256
        if expected_sha256:
            await refuse(stream, context, verdict="done")
            return done
        await self._check_bytes_repeated(stream, context, done)
        return done

    async def _check_bytes_repeated(
        self, stream: AsyncIterator[api.UploadRequest], context: Context, done: StoredObject
    ) -> None:
        """Reads an upload's bytes as any upload's, storing none, and refuses them unless
        they are those of done, which its request id published (see _accept)."""
        # Its reader takes a writer thread as an upload does, and no memory of S3's.
        async with contextlib.AsyncExitStack() as admitted:
            await self._admit(admitted, stream, context, 0)
            reader = VerifyingReader(asyncio.get_running_loop(), 0, "")
            writing = threads.start_upload(repeats.read_to_end, reader, done)
            await pump(stream, reader, writing, self._stopping)
            await to_its_end(writing, reader.abandon, self._stopping)
        repeats.check(done, reader.sha256, reader.size)

    def _memory_of(self, size: int) -> int:
        """What a streamed upload that announced size holds: only S3's is counted."""
        if isinstance(self._backend, S3Backend):
            part = self._backend.streamed_part(size)
            return budget.cost(part, size, self._config.max_message_bytes)
        return 0

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
            stored, chunks = await open_range(
                self._objects, self._backend, project, path, request.offset, request.length
            )
            info: pb.ObjectInfo | None = self._info(stored)
            if chunks is None:  # an empty object or range: only say what it is
                await context.write(api.DownloadResponse(object=info))
                return
            progress = pace.Pace()
            async with contextlib.aclosing(read_ahead(chunks)) as read:
                async for chunk in access.still_admitted(read):
                    for piece in pieces(chunk, self._download_chunk):
                        await write_at_pace(
                            context, api.DownloadResponse(object=info, chunk=piece), progress
                        )
                        progress.moved += len(piece)
                        info = None

    async def DownloadFiles(
        self, request: api.DownloadFilesRequest, context: Context
    ) -> api.DownloadFilesResponse:
        # A download slot holds its answer (CONTENT_BYTES at most, a few copies of it);
        # the call counts as a Download's until it ends, past its handler when its
        # client does not take the answer.
        await slots.taken(self._download_calls, self._stopping)
        context.add_done_callback(lambda _: self._download_calls.release())
        async with slots.held(self._downloads, self._stopping):
            return await self._file_reads.answer(request)

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
        expires = presigned_urls.presign_expiry(
            request.expires_in, self._config.presign_max_seconds
        )
        content_type = content_type_field(request.content_type)
        if not self._backend.supports_presign:
            raise presigned_urls.presign_unsupported()
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
        expected = sha256_field(request.expected_sha256, "expected_sha256")
        if not self._backend.supports_presign:
            raise presigned_urls.presign_unsupported()
        upload_id = presigned_urls.upload_id_field(request.upload_id)
        if (earlier := self._confirmations.under_way(upload_id)) is not None:
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
            lambda caller: self._confirmations.confirm(upload, expected, request_id, caller)
        )
        await self._janitor.collect([key for key in (replaced, upload.storage_key) if key])
        return api.ConfirmUploadResponse(object=self._info(stored))

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
