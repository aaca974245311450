"""`ArtifactClient`: upload, download, open, stat, list and delete stored objects."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from google.protobuf.duration_pb2 import Duration

from .. import _object_paths as object_paths
from .._argument_error import invalid_argument
from .._base import BaseClient
from .._headers import Metadata
from .._numbers import is_bool, real, whole, whole_or_zero
from .._progress import Progress, meter
from .._transport import Transport
from ..artifacts.v1 import artifacts_pb2 as pb
from ..artifacts.v1 import artifacts_service_pb2 as api
from ..artifacts.v1 import artifacts_service_pb2_grpc
from ..exceptions import InvalidArgumentError, NotFoundError
from ..models._uris import ARTIFACTS_SCHEME, ArtifactUri, parse_uri, scheme_of
from ..types._artifacts import ObjectInfo, PresignedUrl, directory, object_from_proto
from ..types._paging import ListOptions, PagedList
from . import _presigned
from ._direct_transfers import DirectTransfers
from ._downloads import Downloads
from ._local_files import (
    Source,
    check_above,
    check_source,
    local_file,
    local_writes,
    size_of,
)
from ._uploads import Uploads

# Objects of at least this size move by direct transfer when the server offers it.
DIRECT_THRESHOLD = 8 * 1024 * 1024
# The longest lifetime a URL may be asked for: a Duration's range (servers cap it lower).
MAX_LIFETIME = timedelta(days=3_650_000)
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
        streams = self._transport.for_project(self._transport.project, timeout=None)
        self._uploads = Uploads(streams, self._stub, self._direct, self._threshold)
        self._downloads = Downloads(
            self._transport, streams, self._stub, self._direct, self._threshold
        )

    def _connections(self) -> int:
        return self.direct_connections

    def _threshold(self) -> int | None:
        return self.direct_threshold

    @property
    def _direct_offered(self) -> bool:
        """Whether the server offers direct transfer, as far as this client knows."""
        return self._direct.offer.standing

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
        try:
            size = await asyncio.to_thread(size_of, source)
        except IsADirectoryError as error:  # a bare one came once the upload had begun
            raise invalid_argument(
                "source", f"{error.filename!r} is a directory: upload_tree uploads one"
            ) from None
        with meter(progress, "upload", path, size) as counted:
            return await self._uploads.send(
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
        """Stores every file under a local directory at path/<its relative path>; returns
        what was stored, in path order.

        Small files go in batches, each stored whole or not at all in one call; every
        other file is an upload of its own (see `upload`). Batches and files under
        `direct_threshold` go several at once, larger ones one after another
        (docs/artifacts.md, "Trees"). A failure lets the calls under way end and begins
        no more: each file is stored whole or not at all, and those stored stay.
        progress shows the tree as one transfer, of the size of all its files.

        Raises:
            FailedPreconditionError: LOCAL_READ_FAILED, metadata path and errno: before
                anything is sent, a folder that cannot be listed or a file that cannot
                be read (`files_in`); once under way, a file removed or made unreadable
                since, the message saying how many of the files were stored.
        """
        return await self._uploads.tree(
            path, Path(local_dir), _folder(path), overwrite, progress, timeout, metadata
        )

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
        async with contextlib.aclosing(
            self._downloads.stream(request, timeout, metadata)
        ) as chunks:
            async for chunk in chunks:
                yield chunk

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
                directory that finished stay (those under way end first).
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
            return await self._downloads.tree(path, target, progress, timeout, metadata)
        try:
            info = await self.stat(path, timeout=timeout, metadata=metadata)
        except NotFoundError:
            return await self._downloads.tree(path, target, progress, timeout, metadata)
        # A destination written as a directory ("models/") is one, made if need be.
        as_directory = str(destination).endswith(("/", os.sep))
        if as_directory or await asyncio.to_thread(target.is_dir):
            target = local_file(target, path.rpartition("/")[2], path)
        with local_writes(target, "nothing of it was written; a file already there is as it was"):
            await asyncio.to_thread(check_above, target.parent, info.path)
            with meter(progress, "download", info.path, info.size) as counted:
                await self._downloads.file(info, target, counted, timeout, metadata)
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


def in_project(transport: Transport, project: str) -> ArtifactClient:
    """An ArtifactClient of project on transport's channel and credentials, with its
    default deadline: the streams that move bytes take none of their own, but the calls
    that list, delete or describe do, as on any ArtifactClient (a client made with no
    deadline here waited for ever on a server that took a call and never answered)."""
    return ArtifactClient(transport.for_project(project, timeout=transport.timeout))


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
