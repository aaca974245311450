"""`ArtifactClient`: upload, download, open, stat, list and delete stored objects."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import io
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from google.protobuf.duration_pb2 import Duration

from .. import _direct_io
from .._base import BaseClient
from .._direct_io import DirectWriter, Writable
from .._progress import Meter, Progress, meter
from .._transport import REQUEST_ID_HEADER, Metadata, with_id
from ..artifacts.v1 import artifacts_pb2 as pb
from ..artifacts.v1 import artifacts_service_pb2 as api
from ..artifacts.v1 import artifacts_service_pb2_grpc
from ..exceptions import (
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    NotFoundError,
    UnavailableError,
    UnimplementedError,
)
from ..models._uris import ARTIFACTS_SCHEME, ArtifactUri, parse_uri, scheme_of
from ..types._artifacts import ObjectInfo, PresignedUrl, directory, object_from_proto
from ..types._paging import ListOptions, PagedList
from . import _direct, _presigned

CHUNK = 1024 * 1024
# Objects of at least this size move by direct transfer when the server offers it.
DIRECT_THRESHOLD = 8 * 1024 * 1024
# Waits before sending an upload again after UNAVAILABLE, as gRPC's own retries do.
UPLOAD_RETRY_WAITS = (0.1, 0.4, 1.6)
# A completion on S3 reads the object back: its default deadline is this, plus the
# object's size at this rate, a slow one for a store reading its own object, so that
# only a call that is stuck reaches it.
COMPLETION_SECONDS = 30.0
COMPLETION_BYTES_PER_SECOND = 50 * 1024 * 1024
Source = str | os.PathLike[str] | bytes | BinaryIO
# Sources that can be read again from the start; a file object is read once.
Resendable = (str, os.PathLike, bytes, bytearray, memoryview)
NO_DIRECT = "DIRECT_TRANSFER_UNAVAILABLE"
SHUTTING_DOWN = "SHUTTING_DOWN"
# A byte endpoint this client could not reach is not tried again for this long: each
# try costs a connect timeout (3 s) when its packets are dropped.
UNREACHABLE_SECONDS = 300.0
_T = TypeVar("_T")
__all__ = ["ArtifactClient", "Progress"]


class ArtifactClient(BaseClient):
    """Async client of `cairn.artifacts.v1.ArtifactService`.

    Paths are relative and "/"-separated ("models/churn/v1.onnx"), within the client's
    project. Every method also takes keyword-only `timeout=` and `metadata=`; transfers
    default to no deadline.
    """

    # Uploads and downloads of whole objects of at least this many bytes move over the
    # service's byte endpoint (docs/artifacts.md, "Direct transfer"); None: never.
    direct_threshold: int | None = DIRECT_THRESHOLD
    # Connections a direct transfer through the object store's presigned URLs (the S3
    # backend) opens at once: parts PUT and ranges fetched in parallel; 1 fetches a
    # download in one GET.
    direct_connections: int = _presigned.CONNECTIONS

    def _bind(self, channel: Any) -> None:
        self._stub = artifacts_service_pb2_grpc.ArtifactServiceStub(channel)
        self._direct_offered = True  # until the server says it offers none
        self._unreachable: dict[tuple[str, int], float] = {}  # endpoint: when to try again
        # The object store of presigned transfers (S3) could not be reached: until then,
        # stream (asking would begin an upload that is never used).
        self._store_unreachable_until = 0.0

    def _goes_direct(self, size: int | None) -> bool:
        threshold = self.direct_threshold
        return (
            self._direct_offered
            and threshold is not None
            and (size or 0) >= max(threshold, 1)
            and self._store_unreachable_until <= time.monotonic()
        )

    def _endpoint(self, ticket: api.DirectTicket) -> _direct.Endpoint | None:
        host = ticket.host or self._transport.artifacts_host
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
                self._direct_offered = False
                return None
            raise

    async def upload(
        self,
        path: str,
        source: Source,
        *,
        overwrite: bool = False,
        content_type: str | None = None,
        progress: Progress = False,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> ObjectInfo:
        """Stores bytes, a local file or a binary file object at path.

        The client sends the sha256 of what it read at the end of the stream; the object
        appears only once all of it arrived and the server's checksum matched. Bytes and
        local files are sent again, under the same request id, when the connection fails
        (UNAVAILABLE): an upload whose answer was lost is then answered with the object
        it stored, never stored twice or refused as ALREADY_EXISTS.

        progress shows the transfer (docs/artifacts.md, "Progress"): True draws a bar on
        stderr when it is a terminal, or prints one line at the end when it is not; a
        rich Console does the same on it; a callable gets (bytes_done, bytes_total).

        Raises:
            AlreadyExistsError: an object is at path and overwrite is False.
            DataLossError: the content that arrived differs from what was sent.
        """
        size = await asyncio.to_thread(_size_of, source)
        with meter(progress, "upload", path, size) as counted:
            return await self._upload(
                path, source, overwrite, content_type, counted, timeout, metadata
            )

    async def upload_tree(
        self,
        path: str,
        local_dir: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        progress: Progress = False,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> list[ObjectInfo]:
        """Stores every file under a local directory at path/<its relative path>, one
        after another, in path order; returns what was stored.

        Each file is an upload of its own (see `upload`): a failure leaves the files
        before it stored. progress shows the tree as one transfer, of the size of all
        its files.
        """
        files = await asyncio.to_thread(_files_under, Path(local_dir))
        total = sum(size for _, size in files)
        # Each file is a write of its own: a request id given is not theirs to share.
        metadata = [(key, value) for key, value in metadata or () if key != REQUEST_ID_HEADER]
        stored = []
        with meter(progress, "upload", _tree_label(path, len(files)), total) as counted:
            for file, _ in files:
                relative = file.relative_to(local_dir).as_posix()
                target = f"{path.rstrip('/')}/{relative}" if path.strip("/") else relative
                stored.append(
                    await self._upload(target, file, overwrite, None, counted, timeout, metadata)
                )
        return stored

    async def _upload(
        self,
        path: str,
        source: Source,
        overwrite: bool,
        content_type: str | None,
        counted: Meter,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> ObjectInfo:
        """One upload, sent again under its request id after UNAVAILABLE when it can be."""
        metadata, waits, start = with_id(metadata), iter(UPLOAD_RETRY_WAITS), counted.done
        while True:
            try:
                return await self._upload_once(
                    path, source, overwrite, content_type, counted, start, timeout, metadata
                )
            except UnavailableError:
                wait = next(waits, None)
                if wait is None or not isinstance(source, Resendable):
                    raise
                await asyncio.sleep(wait)

    async def _upload_once(
        self,
        path: str,
        source: Source,
        overwrite: bool,
        content_type: str | None,
        counted: Meter,
        start: int,
        timeout: float | None,
        metadata: Metadata,
    ) -> ObjectInfo:
        size = await asyncio.to_thread(_size_of, source)
        if self._goes_direct(size) and isinstance(source, Resendable):
            direct = await self._upload_direct(
                path, source, overwrite, content_type, counted, start, timeout, metadata
            )
            if direct is not None:
                return direct
        stream, size, expected, owned = _open_source(source)
        digest = hashlib.sha256()
        header = api.UploadHeader(
            project=self.project,
            path=path,
            content_type=content_type or "",
            expected_size=size or 0,
            expected_sha256=expected,
            overwrite=overwrite,
        )

        def read_and_hash() -> bytes:
            chunk = stream.read(CHUNK)
            digest.update(chunk)
            return chunk

        async def requests() -> AsyncIterator[api.UploadRequest]:
            yield api.UploadRequest(header=header)
            sent = 0
            async for chunk in _read_ahead(read_and_hash):
                sent += len(chunk)
                counted.reach(start + sent)
                yield api.UploadRequest(chunk=chunk)
            yield api.UploadRequest(finish=api.UploadFinish(sha256=digest.hexdigest()))

        try:
            reply = await self._transport.client_stream(
                self._stub.Upload, requests(), timeout=timeout, metadata=metadata
            )
        finally:
            if owned:
                stream.close()
        return object_from_proto(reply.object)

    async def _upload_direct(
        self,
        path: str,
        source: Source,
        overwrite: bool,
        content_type: str | None,
        counted: Meter,
        start: int,
        timeout: float | None,
        metadata: Metadata,
    ) -> ObjectInfo | None:
        """The upload over the byte endpoint; None when it cannot be reached (the caller
        streams instead, under the same request id)."""
        stream, size, expected, owned = _open_source(source)
        try:
            header = api.UploadHeader(
                project=self.project,
                path=path,
                content_type=content_type or "",
                expected_size=size or 0,
                expected_sha256=expected,
                overwrite=overwrite,
            )
            reply = await self._ticket(
                self._stub.CreateUploadTicket,
                api.CreateUploadTicketRequest(header=header, accept_presigned=True),
                timeout,
                metadata,
            )
            if reply is None:
                return None
            if reply.HasField("object"):  # this request id published it already
                return object_from_proto(reply.object)
            if reply.HasField("parts"):
                return await self._upload_presigned(
                    header, source, reply.parts, counted, start, timeout, metadata
                )
            endpoint = self._endpoint(reply.ticket)
            if endpoint is None:
                return None
            loop = asyncio.get_running_loop()

            def sent(done: int) -> None:
                loop.call_soon_threadsafe(counted.reach, start + done)

            try:
                published = await asyncio.to_thread(_direct.upload, endpoint, stream, sent)
            except _direct.Unreachable as error:
                self._fell_back(endpoint, error)
                return None
        finally:
            if owned:
                stream.close()
        return object_from_proto(pb.ObjectInfo.FromString(published))

    async def _upload_presigned(
        self,
        header: api.UploadHeader,
        source: Source,
        parts: api.PresignedParts,
        counted: Meter,
        start: int,
        timeout: float | None,
        metadata: Metadata,
    ) -> ObjectInfo | None:
        """The upload's parts PUT to the object store, then published by the service;
        None when the store cannot be reached (the caller streams instead)."""
        if not isinstance(source, str | os.PathLike | bytes | bytearray | memoryview):
            raise TypeError("parts are read by position: from a local file or bytes")
        loop = asyncio.get_running_loop()

        def sent(done: int) -> None:
            loop.call_soon_threadsafe(counted.reach, start + done)

        try:
            etags, sha256 = await _stopped_when_cancelled(
                functools.partial(
                    _presigned.upload_source,
                    source,
                    header.expected_size,
                    parts.part_size,
                    list(parts.part_urls),
                    sent,
                    max(1, self.direct_connections),
                )
            )
        except _direct.Unreachable as error:
            self._store_fell_back(error)
            return None
        request = api.CompleteUploadTicketRequest(
            project=header.project,
            path=header.path,
            upload=parts.upload,
            etags=etags,
            size=header.expected_size,
            sha256=sha256,
        )
        return await self._complete_upload(request, timeout, metadata)

    async def _complete_upload(
        self,
        request: api.CompleteUploadTicketRequest,
        timeout: float | None,
        metadata: Metadata,
    ) -> ObjectInfo:
        """CompleteUploadTicket, which reads the whole object back: by default its
        deadline grows with the size. It is sent again alone (under the same request id,
        so it publishes once) when it times out or finds the service or the store
        unavailable, rather than sending every part again."""
        if timeout is None:
            timeout = COMPLETION_SECONDS + request.size / COMPLETION_BYTES_PER_SECOND
        waits = iter(UPLOAD_RETRY_WAITS)
        while True:
            try:
                reply = await self._transport.unary(
                    self._stub.CompleteUploadTicket, request, timeout=timeout, metadata=metadata
                )
                return object_from_proto(reply.object)
            except (UnavailableError, DeadlineExceededError):
                wait = next(waits, None)
                if wait is None:
                    raise
                await asyncio.sleep(wait)

    async def open(
        self,
        path: str,
        *,
        offset: int = 0,
        length: int = 0,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> AsyncIterator[bytes]:
        """The object's bytes (or length bytes from offset) as they stream in.

        A whole object is checked against the sha256 the server recorded for it: when
        the bytes differ, the iteration ends with DataLossError (CHECKSUM_MISMATCH)
        after the last chunk, so a corrupt byte never passes silently.
        """
        project, path = self._named(path)
        request = api.DownloadRequest(project=project, path=path, offset=offset, length=length)
        checksum = _Checksum(path) if not offset and not length else None
        async for reply in self._transport.server_stream(
            self._stub.Download, request, timeout=timeout, metadata=metadata
        ):
            if checksum and reply.HasField("object"):
                checksum.expected = reply.object.sha256
            chunk = reply.chunk  # each read of a bytes field copies it
            if chunk:
                if checksum:
                    await checksum.update(chunk)
                yield chunk
        if checksum:
            await checksum.verify()

    async def read(self, path: str, **kwargs: Any) -> bytes:
        """The whole object (or a range, as `open`) in memory."""
        return b"".join([chunk async for chunk in self.open(path, **kwargs)])

    async def download(
        self,
        path: str,
        destination: str | os.PathLike[str],
        *,
        progress: Progress = False,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> Path:
        """Fetches one object to a file, or every object under a directory to a tree.

        A file lands whole or not at all (written beside its target, then renamed). When
        destination is an existing directory, or ends with "/" (the directory is made),
        the object keeps its name inside it. progress shows the transfer as `upload`
        says; a directory is one transfer, of the size of all its objects, listed first.
        Returns the local path written.
        """
        project, path = self._named(path)
        if project != self.project:
            other = ArtifactClient(
                self._transport.for_project(project, timeout=self._transport.timeout)
            )
            return await other.download(
                path, destination, progress=progress, timeout=timeout, metadata=metadata
            )
        target = Path(destination)
        try:
            info = await self.stat(path, timeout=timeout, metadata=metadata)
        except NotFoundError:
            return await self._download_tree(path, target, progress, timeout, metadata)
        # A destination written as a directory ("models/") is one, made if need be.
        as_directory = str(destination).endswith(("/", os.sep))
        if as_directory or await asyncio.to_thread(target.is_dir):
            target = target / Path(path).name
        with meter(progress, "download", info.path, info.size) as counted:
            await self._download_file(info, target, counted, timeout, metadata)
        return target

    def _named(self, path: str) -> tuple[str, str]:
        """The project and path a read names: a path in this client's project, or an
        object's `artifact_uri` (cairn-artifacts://<project>/<path>) in its own."""
        if scheme_of(path) != ARTIFACTS_SCHEME:
            return self.project, path
        uri = parse_uri(path)
        assert isinstance(uri, ArtifactUri)
        return uri.project, uri.path

    async def stat(
        self, path: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> ObjectInfo:
        """Raises NotFoundError when no object is at path."""
        project, path = self._named(path)
        reply = await self._transport.unary(
            self._stub.StatObject,
            api.StatObjectRequest(project=project, path=path),
            timeout=timeout,
            metadata=metadata,
        )
        return object_from_proto(reply.object)

    async def list(
        self,
        prefix: str = "",
        *,
        recursive: bool = False,
        options: ListOptions | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> PagedList[ObjectInfo]:
        """One page of objects under prefix, in path order; a one-level list shows
        deeper paths as directories (is_dir=True). Works with Pager through options."""
        options = options or ListOptions()
        request = api.ListObjectsRequest(
            project=self.project,
            prefix=prefix,
            recursive=recursive,
            page_size=options.limit or 0,
            page_token=options.next_page_token or "",
        )
        reply = await self._transport.unary(
            self._stub.ListObjects, request, timeout=timeout, metadata=metadata
        )
        entries = [object_from_proto(o) for o in reply.objects] + [
            directory(p, self.project) for p in reply.prefixes
        ]
        page = PagedList(sorted(entries, key=lambda e: e.path), reply.next_page_token)
        options.next_page_token = page.next_page_token
        return page

    async def delete(
        self,
        path: str,
        *,
        recursive: bool = False,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> int:
        """Deletes one object, or with recursive every object under the directory path."""
        request = api.DeleteObjectRequest(project=self.project, path=path, recursive=recursive)
        reply = await self._transport.unary(
            self._stub.DeleteObject, request, timeout=timeout, metadata=metadata
        )
        return int(reply.deleted_count)

    async def presigned_url(
        self,
        path: str,
        method: str = "GET",
        *,
        expires_in: timedelta | float = 3600,
        content_type: str | None = None,
        overwrite: bool = False,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> PresignedUrl:
        """A URL to GET or PUT the object without passing through the service (S3 only).

        A URL works until it expires, whatever happens to the caller's key or role
        meanwhile; the server caps the lifetime (CAIRN_PRESIGN_MAX_SECONDS). A PUT lands
        under a key of its own: call `confirm_upload` with its `upload_id` to publish
        it at path (replacing an object there only with overwrite). With content_type,
        the uploader must send that Content-Type (see the returned headers).
        """
        duration = Duration()
        duration.FromTimedelta(
            expires_in if isinstance(expires_in, timedelta) else timedelta(seconds=expires_in)
        )
        request = api.CreatePresignedUrlRequest(
            project=self.project,
            path=path,
            method=f"PRESIGN_METHOD_{method.upper()}",
            expires_in=duration,
            content_type=content_type or "",
            overwrite=overwrite,
        )
        reply = await self._transport.unary(
            self._stub.CreatePresignedUrl, request, timeout=timeout, metadata=metadata
        )
        return PresignedUrl(reply.url, dict(reply.headers), reply.upload_id)

    async def confirm_upload(
        self,
        path: str,
        expected_sha256: str | None = None,
        *,
        upload_id: str,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> ObjectInfo:
        """Publishes an object uploaded through a presigned PUT URL, after the server
        checked its sha256 (when given) and content type.

        Raises:
            NotFoundError: nothing arrived yet (OBJECT_NOT_FOUND; the URL still works), or
                the upload was confirmed already or expired (UPLOAD_NOT_FOUND).
            DataLossError: the bytes differ from expected_sha256.
            FailedPreconditionError: another Content-Type than the URL's was sent.
            AlreadyExistsError: an object is at path and the URL was made without overwrite.
        """
        request = api.ConfirmUploadRequest(
            project=self.project,
            path=path,
            expected_sha256=expected_sha256 or "",
            upload_id=upload_id,
        )
        reply = await self._transport.unary(
            self._stub.ConfirmUpload, request, timeout=timeout, metadata=metadata
        )
        return object_from_proto(reply.object)

    async def _download_file(
        self,
        info: ObjectInfo,
        target: Path,
        counted: Meter,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.parent / f".{target.name}.{uuid.uuid4().hex}.part"
        try:
            if self._goes_direct(info.size) and await self._download_direct(
                info, temporary, counted, timeout, metadata
            ):
                os.replace(temporary, target)
                return
            with _file_for(temporary, info.size) as out:
                received = 0
                async for chunk in _written_behind(
                    out, self.open(info.path, timeout=timeout, metadata=metadata)
                ):
                    received += len(chunk)
                    counted.advance(len(chunk))
            await asyncio.to_thread(_check_length, temporary, received)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)

    async def _download_direct(
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
        request = api.CreateDownloadTicketRequest(
            project=self.project, path=info.path, accept_presigned=True
        )
        reply = await self._ticket(self._stub.CreateDownloadTicket, request, timeout, metadata)
        if reply is None:
            return False
        loop, start = asyncio.get_running_loop(), counted.done

        def received(done: int) -> None:
            loop.call_soon_threadsafe(counted.reach, start + done)

        fetch = self._fetch_from_store if reply.url else self._fetch_from_endpoint
        sha256 = await fetch(reply, temporary, received)
        if sha256 is None:
            return False
        await asyncio.to_thread(_check_length, temporary, reply.object.size)
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
        try:
            return await _stopped_when_cancelled(
                functools.partial(
                    _presigned.download,
                    reply.url,
                    str(temporary),
                    reply.object.size,
                    received,
                    max(1, self.direct_connections),
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
            with _file_for(temporary, reply.object.size) as out:
                return await asyncio.to_thread(
                    _direct.download, endpoint, out, reply.object.size, received
                )
        except _direct.Unreachable as error:
            self._fell_back(endpoint, error)
            return None

    async def _download_tree(
        self,
        path: str,
        target: Path,
        progress: Progress,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> Path:
        prefix = path.rstrip("/") + "/"
        # Listed whole first: the transfer's total is known before its first byte.
        objects: list[ObjectInfo] = []
        options = ListOptions()
        while True:
            objects += await self.list(
                prefix, recursive=True, options=options, timeout=timeout, metadata=metadata
            )
            if options.next_page_token is None:
                break
        if not objects:
            raise NotFoundError(f"no object or directory at {path!r}", reason="OBJECT_NOT_FOUND")
        total = sum(info.size for info in objects)
        with meter(progress, "download", _tree_label(prefix, len(objects)), total) as counted:
            for info in objects:
                await self._download_file(
                    info, target / info.path[len(prefix) :], counted, timeout, metadata
                )
        return target


class _Checksum:
    """The sha256 of a download, hashed in a worker thread while the next chunk arrives."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.expected = ""
        self._digest = hashlib.sha256()
        self._hashing: asyncio.Future[None] | None = None

    async def update(self, chunk: bytes) -> None:
        if self._hashing is not None:
            await self._hashing
        self._hashing = asyncio.ensure_future(asyncio.to_thread(self._digest.update, chunk))

    async def verify(self) -> None:
        if self._hashing is not None:
            await self._hashing
        received = self._digest.hexdigest()
        if received != self.expected:
            raise DataLossError(
                f"{self.path!r} arrived with sha256 {received}, but was stored with "
                f"{self.expected}",
                reason="CHECKSUM_MISMATCH",
                metadata={"sha256": received, "expected_sha256": self.expected},
            )


async def _stopped_when_cancelled(transfer: Callable[..., _T]) -> _T:
    """transfer(stop=...) in a thread. A thread cannot be cancelled: when the caller is,
    stop tells the transfer's threads to end at their next chunk rather than move the
    rest of the object unseen."""
    stop = threading.Event()
    try:
        return await asyncio.to_thread(transfer, stop=stop)
    finally:
        stop.set()


async def _read_ahead(read: Callable[[], bytes]) -> AsyncIterator[bytes]:
    """The chunks of a blocking read until it returns nothing, each read in a thread
    while the caller still sends the one before."""
    pending = asyncio.ensure_future(asyncio.to_thread(read))
    try:
        while chunk := await pending:
            pending = asyncio.ensure_future(asyncio.to_thread(read))
            yield chunk
    finally:
        # A read still running must end before its file may be closed.
        with contextlib.suppress(Exception):
            await pending


async def _written_behind(out: Writable, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Passes chunks on while writing each to out in a thread, one write in flight while
    the next chunk arrives; every write has ended when this ends, however it ends."""
    writing: asyncio.Future[int] | None = None
    try:
        async for chunk in chunks:
            if writing is not None:
                await writing
            writing = asyncio.ensure_future(asyncio.to_thread(out.write, chunk))
            yield chunk
        if writing is not None:
            await writing
    finally:
        if writing is not None and not writing.done():
            with contextlib.suppress(Exception):
                await writing


def _file_for(path: Path, size: int) -> BinaryIO | DirectWriter:
    """A new file to download into: large ones are written around the page cache."""
    if size >= _direct_io.BUFFER:
        return DirectWriter.create(path, exclusive=False)
    return path.open("wb")


def _check_length(path: Path, size: int) -> None:
    """Raises unless the file holds exactly the size received (a write that failed
    half-way must not leave a file the checksum was not computed over)."""
    length = path.stat().st_size
    if length != size:
        raise DataLossError(
            f"{path} holds {length} bytes, not the {size} received",
            reason="CHECKSUM_MISMATCH",
            metadata={"size": str(size), "stored_size": str(length)},
        )


def _open_source(source: Source) -> tuple[BinaryIO, int | None, str, bool]:
    """A readable stream, its size when known, its sha256 when cheaply known, and
    whether this client opened it (and so closes it)."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        return io.BytesIO(data), len(data), hashlib.sha256(data).hexdigest(), True
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        return path.open("rb"), path.stat().st_size, "", True
    return source, None, "", False


def _size_of(source: Source) -> int | None:
    """The size an upload will have, when known before reading it (not for a file object)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return len(source)
    if isinstance(source, str | os.PathLike):
        return Path(source).stat().st_size
    return None


def _files_under(base: Path) -> list[tuple[Path, int]]:
    """Every file under base, in path order, with its size."""
    if not base.is_dir():
        raise NotADirectoryError(f"{base} is not a directory")
    files = sorted(p for p in base.rglob("*") if p.is_file())
    return [(file, file.stat().st_size) for file in files]


def _tree_label(path: str, count: int) -> str:
    return f"{path.rstrip('/') or '.'}/ ({count} file{'s' if count != 1 else ''})"
