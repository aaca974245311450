"""`ArtifactClient`: upload, download, open, stat, list and delete stored objects."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from google.protobuf.duration_pb2 import Duration

from .. import _object_paths as object_paths
from .._argument_error import invalid_argument
from .._base import BaseClient
from .._channels import resent_after
from .._direct_io import Writable
from .._headers import REQUEST_ID_HEADER, Metadata, check_timeout, with_id
from .._numbers import is_bool, real, whole, whole_or_zero
from .._progress import Meter, Progress, meter
from .._transport import Transport
from ..artifacts.v1 import artifacts_pb2 as pb
from ..artifacts.v1 import artifacts_service_pb2 as api
from ..artifacts.v1 import artifacts_service_pb2_grpc
from ..exceptions import (
    AbortedError,
    CairnError,
    DataLossError,
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from ..models._uris import ARTIFACTS_SCHEME, ArtifactUri, parse_uri, scheme_of
from ..types._artifacts import ObjectInfo, PresignedUrl, directory, object_from_proto
from ..types._paging import ListOptions, PagedList
from . import _presigned
from ._direct_transfers import UPLOAD_RETRY_WAITS, CompletionFailed, DirectTransfers, Upload
from ._local_files import (
    Resendable,
    Source,
    check_length,
    check_room,
    check_source,
    file_for,
    files_in,
    local_file,
    local_writes,
    open_source,
    size_of,
    tree_files,
)

# What an upload sends a message: under 1 MiB with its framing, the least message a
# server may be given (CAIRN_MAX_MESSAGE_BYTES); 1 MiB whole was refused by such a one.
CHUNK = 1023 * 1024
# Objects of at least this size move by direct transfer when the server offers it.
DIRECT_THRESHOLD = 8 * 1024 * 1024
# The longest lifetime a URL may be asked for: a Duration's range (servers cap it lower).
MAX_LIFETIME = timedelta(days=3_650_000)
# The reason of a download the server cut because its reader fell behind the pace.
STREAM_STALLED = "STREAM_STALLED"
__all__ = ["ArtifactClient", "Progress"]


@dataclass
class _Transfers:
    """How transfers move, for every ArtifactClient on one channel: the run, model and
    versioned-artifact methods make their own, for a project, and a threshold set on
    `client.artifacts` alone was not theirs (their uploads still went direct)."""

    threshold: int | None = DIRECT_THRESHOLD
    connections: int = _presigned.CONNECTIONS


class ArtifactClient(BaseClient):
    """Async client of `cairn.artifacts.v1.ArtifactService`.

    Paths are relative and "/"-separated ("models/churn/v1.onnx"), within the client's
    project. Every method also takes keyword-only `timeout=` and `metadata=`. The
    client's default timeout bounds its unary calls (stat, list, delete, the tickets of
    direct transfer); the streams that move bytes (`upload`, `open`, `read` and the
    streamed path of `download`) default to no deadline, as they take as long as their
    bytes do.
    """

    @property
    def direct_threshold(self) -> int | None:
        """Uploads and downloads of whole objects of at least this many bytes move
        directly (docs/artifacts.md, "Direct transfer"): over the service's byte
        endpoint, or, on the S3 backend, to and from the object store through presigned
        URLs; None: never. Set, it holds for every client on this one's channel."""
        return self._transfers.threshold

    @direct_threshold.setter
    def direct_threshold(self, value: int | None) -> None:
        # Checked as set: a threshold of "1" or NaN failed, or turned direct transfer
        # off, only at the next upload.
        if value is not None and whole(value, "direct_threshold") < 0:
            raise invalid_argument("direct_threshold", f"must be 0 or more bytes, not {value}")
        self._transfers.threshold = value

    @property
    def direct_connections(self) -> int:
        """Connections a direct transfer through the object store's presigned URLs (the
        S3 backend) opens at once: parts PUT and ranges fetched in parallel; 1 fetches a
        download in one GET. Set, it holds for every client on this one's channel."""
        return self._transfers.connections

    @direct_connections.setter
    def direct_connections(self, value: int) -> None:
        if whole(value, "direct_connections") < 1:
            raise invalid_argument("direct_connections", f"must be 1 or more, not {value}")
        self._transfers.connections = value

    def _bind(self, channel: Any) -> None:
        self._transfers: _Transfers = self._transport.shared.setdefault("transfers", _Transfers())
        self._stub = artifacts_service_pb2_grpc.ArtifactServiceStub(channel)
        self._direct = DirectTransfers(self._transport, self._stub, self._connections)
        # The byte streams, on the same channel and credentials without a default
        # deadline: a 30 s one failed any transfer longer than that (10 GiB over a link
        # slower than 340 MiB/s, say). The channel's keepalive notices a connection that
        # dies under a stream, and timeout= on a call still bounds it.
        self._streams = self._transport.for_project(self._transport.project, timeout=None)

    def _connections(self) -> int:
        return self.direct_connections

    @property
    def _direct_offered(self) -> bool:
        """Whether the server offers direct transfer, as far as this client knows."""
        return self._direct.offered

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
        _sendable(path)
        check_source(source)
        size = await asyncio.to_thread(size_of, source)
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
        files = await asyncio.to_thread(_files_under, Path(local_dir), _folder(path))
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
        """One upload within timeout: its attempts, the waits between them, and what each
        does over the byte endpoint or the object store, where no gRPC deadline reaches."""
        upload = Upload(
            path, source, overwrite, content_type, counted, counted.done, timeout, with_id(metadata)
        )
        async with _within(timeout, f"the upload of {path!r}") as deadline:
            return await self._attempts(upload, deadline)

    async def _attempts(self, upload: Upload, deadline: asyncio.Timeout) -> ObjectInfo:
        """The upload, sent again under its request id after UNAVAILABLE or a transaction
        conflict (resent_after) when it can be (not after its completion failed: see
        `DirectTransfers._complete_upload`), unless the wait would outlast the deadline:
        the last error is raised."""
        waits, loop = iter(UPLOAD_RETRY_WAITS), asyncio.get_running_loop()
        while True:
            try:
                return await self._upload_once(upload)
            except CairnError as error:
                wait, ends = next(waits, None), deadline.when()
                if (
                    wait is None
                    or not resent_after(error)
                    or not isinstance(upload.source, Resendable)
                    or isinstance(error, CompletionFailed)
                    or (ends is not None and loop.time() + wait >= ends)
                ):
                    raise
                await asyncio.sleep(wait)

    async def _upload_once(self, upload: Upload) -> ObjectInfo:
        source = upload.source
        size = await asyncio.to_thread(size_of, source)
        if self._direct.goes_direct(size, self.direct_threshold) and isinstance(source, Resendable):
            direct = await self._direct.upload(upload)
            if direct is not None:
                return direct
        stream, size, expected, owned = open_source(source)
        digest = hashlib.sha256()
        header = upload.header(self.project, size, expected)

        def read_and_hash() -> bytes:
            chunk = stream.read(CHUNK)
            digest.update(chunk)
            return chunk

        async def requests() -> AsyncGenerator[api.UploadRequest, None]:
            yield api.UploadRequest(header=header)
            sent = 0
            async with contextlib.aclosing(_read_ahead(read_and_hash)) as chunks:
                async for chunk in chunks:
                    sent += len(chunk)
                    upload.counted.reach(upload.start + sent)
                    yield api.UploadRequest(chunk=chunk)
            yield api.UploadRequest(finish=api.UploadFinish(sha256=digest.hexdigest()))

        sending = requests()
        try:
            reply = await self._streams.client_stream(
                self._stub.Upload, sending, timeout=upload.timeout, metadata=upload.metadata
            )
        finally:
            # Closed here, not when collected: the read it has in flight ends before the
            # file closes (it read a closed file when a call failed midway).
            await sending.aclose()
            if owned:
                stream.close()
        return object_from_proto(reply.object)

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
        after the last chunk, so a corrupt byte never passes silently. Whole or a range,
        a stream that brings more bytes than were asked for, or than the object's size
        leaves past offset, ends with that error at the first chunk too many, which is
        not yielded.

        A stream cut midway is opened again where it stopped, on the same stored bytes,
        for as long as each stream moves some: one that broke (UNAVAILABLE: the object
        store failed, the server stopped, the connection dropped), and one the server
        cut because the loop over it took nothing for minutes (STREAM_STALLED). When
        the object was replaced or deleted meanwhile, the iteration ends with
        AbortedError (OBJECT_CHANGED) or NotFoundError instead. `timeout` bounds them
        all together.
        """
        project, path = self._named(path)
        request = api.DownloadRequest(
            project=project,
            path=path,
            offset=whole(offset, "offset"),
            length=whole(length, "length"),
        )
        asked = request  # request moves on past what arrived when a stream is cut
        checksum = _Checksum(path) if not offset and not length else None
        stored: pb.ObjectInfo | None = None
        deadline = _Deadline(check_timeout(timeout))
        received = 0  # by every stream together
        while True:  # once, unless a stream is cut midway
            moved = 0
            try:
                async for reply in self._streams.server_stream(
                    self._stub.Download, request, timeout=deadline.left(), metadata=metadata
                ):
                    if reply.HasField("object"):
                        stored = _same_bytes(stored, reply.object)
                        if checksum:
                            checksum.expected = stored.sha256
                    chunk = reply.chunk  # each read of a bytes field copies it
                    if chunk:
                        moved += len(chunk)
                        received += len(chunk)
                        _check_not_past(asked, stored, received)
                        if checksum:
                            await checksum.update(chunk)
                        yield chunk
                break
            except (UnavailableError, ResourceExhaustedError) as error:
                if not moved or not _resumable(error) or deadline.passed():
                    raise
                rest = _after(request, moved)
                if rest is None:  # the cut came after the range's last byte
                    break
                request = rest
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
        """Fetches one object to a file, or every object under a directory to a tree (a
        path ending in "/" names a directory; "" the whole project).

        A file lands whole or not at all (written beside its target, then renamed). When
        destination is an existing directory, or ends with "/" (the directory is made),
        the object keeps its name inside it. progress shows the transfer as `upload`
        says; a directory is one transfer, of the size of all its objects, listed first.
        Returns the local path written.

        Raises:
            NotFoundError: no object or directory at path.
            FailedPreconditionError: before anything is written, an object whose name is
                no plain file name inside destination here (UNSAFE_LOCAL_PATH: on
                Windows, "C:" or "a.txt:x", say), or a directory whose objects one local
                tree cannot hold (LOCAL_PATH_CONFLICT: "a" beside "a/b"), or not beside
                what destination holds already (a local file "a" where "a/b" goes);
                LOCAL_WRITE_FAILED, the file system refused a write (full, read-only)
                or a name (too long): the file being written is removed, those of a
                directory finished before it stay.
            DataLossError: the bytes that arrived differ from those stored.
        """
        project, path = self._named(path)
        if project != self.project:
            other = in_project(self._transport, project)
            return await other.download(
                path, destination, progress=progress, timeout=timeout, metadata=metadata
            )
        target = Path(destination)
        # A directory as written, or the whole project ("", not "/": a path that starts
        # with "/" is refused, as a typo of an absolute path).
        if not path or (path.endswith("/") and path.strip("/")):
            return await self._download_tree(path, target, progress, timeout, metadata)
        try:
            info = await self.stat(path, timeout=timeout, metadata=metadata)
        except NotFoundError:
            return await self._download_tree(path, target, progress, timeout, metadata)
        # A destination written as a directory ("models/") is one, made if need be.
        as_directory = str(destination).endswith(("/", os.sep))
        if as_directory or await asyncio.to_thread(target.is_dir):
            target = local_file(target, path.rpartition("/")[2], path)
        with (
            local_writes(target, "nothing of it was written; a file already there is as it was"),
            meter(progress, "download", info.path, info.size) as counted,
        ):
            await self._download_file(info, target, counted, timeout, metadata)
        return target

    def _named(self, path: str) -> tuple[str, str]:
        """The project and path a read names: a path in this client's project, or an
        object's `artifact_uri` (cairn-artifacts://<project>/<path>) in its own. Only
        with its "//" is it a URI, which no path can hold (no segment is empty): the
        store takes the path "cairn-artifacts:/z", which was read as a URI and refused."""
        as_uri = scheme_of(_sendable(path)) == ARTIFACTS_SCHEME
        if not (as_uri and path[len(ARTIFACTS_SCHEME) :].startswith("://")):
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
            prefix=_sendable(prefix, "prefix"),
            recursive=recursive,
            page_size=whole_or_zero(options.limit, "limit", 32),
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
        request = api.DeleteObjectRequest(
            project=self.project, path=_sendable(path), recursive=recursive
        )
        reply = await self._transport.unary(
            self._stub.DeleteObject, request, timeout=timeout, metadata=metadata
        )
        return int(reply.deleted_count)

    async def presigned_url(
        self,
        path: str,
        method: str = "GET",
        *,
        expires_in: timedelta | float | None = None,
        content_type: str | None = None,
        overwrite: bool = False,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> PresignedUrl:
        """A URL to GET or PUT the object without passing through the service (S3 only).

        A URL works until it expires, whatever happens to the caller's key or role
        meanwhile, and never past the key's own expiry. Its lifetime is expires_in (in
        seconds, or a timedelta), at most the server's cap (CAIRN_PRESIGN_MAX_SECONDS);
        None or 0 asks for the server's default: an hour, or the cap or what the key
        has left if shorter. An expires_in past the key's expiry is refused
        (InvalidArgumentError). A PUT lands
        under a key of its own: call `confirm_upload` with its `upload_id` to publish
        it at path (replacing an object there only with overwrite). With content_type,
        the uploader must send that Content-Type (see the returned headers).
        """
        duration = Duration()
        if expires_in is not None:
            duration.FromTimedelta(_lifetime(expires_in))
        request = api.CreatePresignedUrlRequest(
            project=self.project,
            path=_sendable(path),
            method=_presign_method(method),
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
            ResourceExhaustedError: (COMPLETIONS_BUSY) the server reads back as many
                uploads at once as it may; the upload waits, call again shortly.
        """
        request = api.ConfirmUploadRequest(
            project=self.project,
            path=_sendable(path),
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
        # Of a bounded length, unlike one with the target's name in it: any name the
        # file system takes (255 bytes on ext4) has room for its temporary beside it.
        temporary = target.parent / f".cairn-{uuid.uuid4().hex}.part"
        try:
            async with _within(timeout, f"the download of {info.path!r}"):
                await self._download_to(info, temporary, counted, timeout, metadata)
            os.replace(temporary, target)
        finally:
            # A file that cannot be removed must not hide the error that ended the write.
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)

    async def _download_to(
        self,
        info: ObjectInfo,
        temporary: Path,
        counted: Meter,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> None:
        """The object in temporary: over the byte endpoint or from the store when it
        can, else streamed."""
        threshold, start = self.direct_threshold, counted.done
        if self._direct.goes_direct(info.size, threshold) and await self._direct.download(
            info, temporary, counted, timeout, metadata
        ):
            return
        with file_for(temporary, info.size) as out:
            received = 0
            async for chunk in _written_behind(
                out, self.open(info.path, timeout=timeout, metadata=metadata)
            ):
                received += len(chunk)
                # From where this file began: bytes a direct transfer that broke off
                # moved were shown already.
                counted.reach(start + received)
        await asyncio.to_thread(check_length, temporary, received)

    async def _download_tree(
        self,
        path: str,
        target: Path,
        progress: Progress,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> Path:
        prefix = f"{path.rstrip('/')}/" if path.rstrip("/") else ""  # "": the project's
        # Listed whole first: the transfer's total is known before its first byte, and
        # every local name is checked before one is written.
        request = api.ListObjectsRequest(project=self.project, prefix=prefix, recursive=True)
        listed = await self._transport.every_page(
            self._stub.ListObjects,
            request,
            lambda reply: reply.objects,
            timeout=timeout,
            metadata=metadata,
        )
        if not listed:
            raise NotFoundError(f"no object or directory at {path!r}", reason="OBJECT_NOT_FOUND")
        objects = [object_from_proto(o) for o in listed]
        paths = [info.path for info in objects]
        files = await asyncio.to_thread(tree_files, target, prefix, paths)  # asks the disk
        # A name this file system cannot hold (a segment of 300 bytes, which the store
        # takes) fails its first look on disk: refused as the write of it would be.
        with local_writes(
            target, "nothing was written (download it alone to a file name of your choice)"
        ):
            await asyncio.to_thread(check_room, target, paths, files)
        total = sum(info.size for info in objects)
        left = "the files downloaded before it are there, each whole; download again to finish"
        with (
            local_writes(target, left),
            meter(progress, "download", _tree_label(prefix, len(objects)), total) as counted,
        ):
            for info, file in zip(objects, files, strict=True):
                await self._download_file(info, file, counted, timeout, metadata)
        return target


def in_project(transport: Transport, project: str) -> ArtifactClient:
    """An ArtifactClient of project on transport's channel and credentials, with its
    default deadline: the streams that move bytes take none of their own, but the calls
    that list, delete or describe do, as on any ArtifactClient (a client made with no
    deadline here waited for ever on a server that took a call and never answered)."""
    return ArtifactClient(transport.for_project(project, timeout=transport.timeout))


def _resumable(error: CairnError) -> bool:
    """Whether a download cut by error may go on where it stopped."""
    return isinstance(error, UnavailableError) or error.reason == STREAM_STALLED


@contextlib.asynccontextmanager
async def _within(timeout: float | None, what: str) -> AsyncIterator[asyncio.Timeout]:
    """The block bounded by a call's timeout (None: unbounded) as a whole, raising
    DeadlineExceededError once it passed. A TimeoutError of the block's own (an attempt's
    DEADLINE_EXCEEDED, a file's ETIMEDOUT) is raised as it is."""
    seconds = check_timeout(timeout)
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            yield deadline
    except TimeoutError:
        if seconds is None or not deadline.expired():
            raise
        raise DeadlineExceededError(
            f"{what} did not end within its timeout of {seconds:g} s"
        ) from None


class _Deadline:
    """The time left of a call's timeout (None: no deadline) across the streams it opens."""

    def __init__(self, timeout: float | None) -> None:
        self._ends = None if timeout is None else time.monotonic() + timeout

    def left(self) -> float | None:
        # Never 0, which a call refuses as a timeout: so little time fails the call
        # DEADLINE_EXCEEDED, as it should.
        return None if self._ends is None else max(self._ends - time.monotonic(), 0.001)

    def passed(self) -> bool:
        return self._ends is not None and time.monotonic() >= self._ends


def _same_bytes(first: pb.ObjectInfo | None, now: pb.ObjectInfo) -> pb.ObjectInfo:
    """The object a download reads, which a stream opened again must find unchanged."""
    if first is not None and (now.uri, now.sha256) != (first.uri, first.sha256):
        raise AbortedError(
            f"{first.path!r} was replaced while it was read; read it again",
            reason="OBJECT_CHANGED",
        )
    return first or now


def _after(request: api.DownloadRequest, moved: int) -> api.DownloadRequest | None:
    """The part of request's range left once moved bytes of it arrived; None when none
    is (a length of 0 would ask for the rest of the object)."""
    if request.length and moved >= request.length:
        return None
    return api.DownloadRequest(
        project=request.project,
        path=request.path,
        offset=request.offset + moved,
        length=request.length - moved if request.length else 0,
    )


def _most_bytes(asked: api.DownloadRequest, stored: pb.ObjectInfo | None) -> int:
    """The most bytes a download may bring: no more than its range's length, nor than
    the object holds past its offset by the size its stream states; none before the
    stream has said what object it sends (the server's first message does)."""
    held = 0 if stored is None else max(stored.size - asked.offset, 0)
    return min(asked.length, held) if asked.length else held


def _check_not_past(
    asked: api.DownloadRequest, stored: pb.ObjectInfo | None, received: int
) -> None:
    """Raises DataLossError (CHECKSUM_MISMATCH) at the first chunk past `_most_bytes`,
    before it is passed on: a server that sends on, without end even, fills neither a
    read's memory nor a download's disk."""
    most = _most_bytes(asked, stored)
    if received > most:
        what = (
            f"more of {asked.path!r} arrived than the {most} bytes its range and size hold"
            if stored is not None
            else f"bytes of {asked.path!r} arrived before the stream said what object it sends"
        )
        raise DataLossError(
            f"{what}; nothing past them was kept",
            reason="CHECKSUM_MISMATCH",
            metadata={"size": str(most), "received": str(received)},
        )


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


async def _read_ahead(read: Callable[[], bytes]) -> AsyncGenerator[bytes, None]:
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


def _sendable(path: str, field: str = "path") -> str:
    """path, unless no request can carry it (a name's bytes read as lone surrogates):
    refused as the server refuses a path, where protobuf raised a UnicodeEncodeError."""
    if isinstance(path, str) and not object_paths.is_text(path):
        raise _invalid_path(field, object_paths.NOT_TEXT)
    return path


def _folder(path: str) -> str:
    """path, a folder to store files under ("" the project's root), unless its text is
    no path's, as the server would refuse each file's: "/" and "//" were taken for the
    root, so a typo of an absolute path stored a whole tree there."""
    if isinstance(path, str) and path and (problem := object_paths.text_problem(path)):
        raise _invalid_path("path", problem)
    return path


def _invalid_path(field: str, problem: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"{field}: {problem}", reason="INVALID_PATH", field_violations=[(field, problem)]
    )


def _presign_method(method: str) -> pb.PresignMethod:
    """The method a presigned URL is made for, as its enum; another is an
    InvalidArgumentError naming the argument."""
    if isinstance(method, str) and method.upper() in ("GET", "PUT"):
        return pb.PresignMethod.Value(f"PRESIGN_METHOD_{method.upper()}")
    raise invalid_argument("method", f"{method!r} is not one of GET, PUT")


def _files_under(base: Path, under: str) -> list[tuple[Path, int]]:
    """Every file under base, in path order, with its size (see `files_in`)."""
    if not base.is_dir():
        raise NotADirectoryError(f"{base} is not a directory")
    files = [base / relative for relative in files_in(base, under)]
    return [(file, file.stat().st_size) for file in files]


def _tree_label(path: str, count: int) -> str:
    return f"{path.rstrip('/') or '.'}/ ({count} file{'s' if count != 1 else ''})"


def _lifetime(expires_in: float | timedelta) -> timedelta:
    """A presigned URL's lifetime asked for, else InvalidArgumentError naming expires_in
    (NaN, inf or 1e15 seconds were bare ValueErrors and OverflowErrors)."""
    if isinstance(expires_in, timedelta):
        return expires_in
    number = None if is_bool(expires_in) else real(expires_in, "expires_in")
    # Only what no Duration holds: the server judges the rest against its cap.
    if number is None or not abs(number) <= MAX_LIFETIME.total_seconds():
        raise invalid_argument("expires_in", f"{expires_in!r} is no number of seconds")
    return timedelta(seconds=number)
