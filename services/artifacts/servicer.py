"""gRPC servicer of the artifact service: streams bytes between clients and backends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TypeAlias

import grpc

from cairn.artifacts.v1 import artifacts_pb2 as pb
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.artifacts.v1 import artifacts_service_pb2_grpc

from ..common import paging, timestamps
from ..common import validation as common
from ..common.errors import DataLoss, DomainError, NotFound, OutOfRange, invalid_field
from ..common.service import Resources
from . import backends, paths
from .store import ObjectStore, StoredObject, already_exists
from .streams import VerifyingReader, read_ahead

Context: TypeAlias = grpc.aio.ServicerContext
MAX_LIST_PAGE = 1000
MAX_PRESIGN = timedelta(days=7)
_SHA256_HEX = frozenset("0123456789abcdef")
# The verdict on an upload's header, sent as initial metadata; the client streams its
# chunks only after "accepted" (the same name is in the client's transport).
STREAM_VERDICT_HEADER = "x-cairn-stream"
# A refused client should half-close at once; one that keeps sending is cut off here.
REFUSED_DRAIN = 64


class ArtifactServicer(artifacts_service_pb2_grpc.ArtifactServiceServicer):
    def __init__(self, resources: Resources, backend: backends.Backend | None = None) -> None:
        self._backend = backend or backends.from_config(resources.config)
        self._objects = ObjectStore(resources.pool)

    async def Upload(
        self, request_iterator: AsyncIterator[api.UploadRequest], context: Context
    ) -> api.UploadResponse:
        stream = aiter(request_iterator)
        header, project, path, expected_sha256 = await self._accept(stream, context)
        reader = VerifyingReader(asyncio.get_running_loop(), header.expected_size, expected_sha256)
        key = self._backend.key(project, path)
        content_type = header.content_type or "application/octet-stream"
        writing = asyncio.ensure_future(
            asyncio.to_thread(self._backend.write, key, reader, content_type, header.expected_size)
        )
        await _pump(stream, reader, writing)
        await writing
        stored = await self._objects.record(
            project, path, reader.size, reader.sha256, content_type, header.overwrite
        )
        return api.UploadResponse(object=self._info(stored))

    async def _accept(
        self, stream: AsyncIterator[api.UploadRequest], context: Context
    ) -> tuple[api.UploadHeader, str, str, str]:
        """Checks the header, then tells the client whether to send its chunks."""
        try:
            header = await _header(stream)
            project = common.project(header.project)
            path = paths.object_path(header.path)
            expected_sha256 = _sha256(header.expected_sha256)
            if header.expected_size < 0:
                raise invalid_field("expected_size", "must not be negative")
            if not header.overwrite and await self._objects.exists(project, path):
                raise already_exists(path)
        except DomainError:
            await _refuse(stream, context)
            raise
        await context.send_initial_metadata(((STREAM_VERDICT_HEADER, "accepted"),))
        return header, project, path, expected_sha256

    async def Download(
        self, request: api.DownloadRequest, context: Context
    ) -> AsyncIterator[api.DownloadResponse]:
        stored = await self._objects.get(
            common.project(request.project), paths.object_path(request.path)
        )
        offset, length = _range(request.offset, request.length, stored.size)
        info: pb.ObjectInfo | None = self._info(stored)
        if not length:  # an empty object or range: only say what it is
            yield api.DownloadResponse(object=info)
            return
        chunks = self._backend.read(self._backend.key(stored.project, stored.path), offset, length)
        async for chunk in read_ahead(chunks):
            yield api.DownloadResponse(object=info, chunk=chunk)
            info = None

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
        return api.ListObjectsResponse(
            objects=[self._info(o) for o in listing.objects],
            prefixes=listing.prefixes,
            next_page_token=listing.next_page_token,
        )

    async def DeleteObject(
        self, request: api.DeleteObjectRequest, context: Context
    ) -> api.DeleteObjectResponse:
        project = common.project(request.project)
        if request.recursive:
            # A directory, never a raw prefix: deleting "run1" must not take "run10/".
            path = paths.prefix(request.path).removesuffix("/") + "/"
        else:
            path = paths.object_path(request.path)
        removed = await self._objects.remove(project, path, request.recursive)
        if not removed and not request.recursive:
            raise NotFound("OBJECT_NOT_FOUND", f"no object at {path!r}", metadata={"path": path})
        await asyncio.to_thread(
            self._backend.delete, [self._backend.key(project, p) for p in removed]
        )
        return api.DeleteObjectResponse(deleted_count=len(removed))

    async def CreatePresignedUrl(
        self, request: api.CreatePresignedUrlRequest, context: Context
    ) -> api.CreatePresignedUrlResponse:
        project = common.project(request.project)
        path = paths.object_path(request.path)
        expires = request.expires_in.ToTimedelta() or timedelta(hours=1)
        if not timedelta(0) < expires <= MAX_PRESIGN:
            raise invalid_field("expires_in", "must be positive and at most 7 days")
        headers = {}
        if request.method == pb.PRESIGN_METHOD_PUT:
            if not request.content_type:
                raise invalid_field(
                    "content_type", "a presigned PUT needs the content type the client will send"
                )
            method, headers = "PUT", {"Content-Type": request.content_type}
        elif request.method == pb.PRESIGN_METHOD_GET:
            await self._objects.get(project, path)
            method = "GET"
        else:
            raise invalid_field("method", "GET or PUT")
        url = await asyncio.to_thread(
            self._backend.presign,
            self._backend.key(project, path),
            method,
            expires,
            request.content_type,
        )
        return api.CreatePresignedUrlResponse(url=url, headers=headers)

    async def ConfirmUpload(
        self, request: api.ConfirmUploadRequest, context: Context
    ) -> api.ConfirmUploadResponse:
        """Reads an object a client put through a presigned URL, checks it, publishes it."""
        project = common.project(request.project)
        path = paths.object_path(request.path)
        expected = _sha256(request.expected_sha256)
        key = self._backend.key(project, path)
        found = await asyncio.to_thread(self._backend.hash_and_size, key)
        if found is None:
            raise NotFound(
                "OBJECT_NOT_FOUND", f"nothing was uploaded to {path!r}", metadata={"path": path}
            )
        sha256, size = found
        if expected and sha256 != expected:
            await asyncio.to_thread(self._backend.delete, [key])
            raise DataLoss(
                "CHECKSUM_MISMATCH",
                f"uploaded content has sha256 {sha256}, not {expected}",
                metadata={"sha256": sha256, "expected_sha256": expected},
            )
        stored = await self._objects.record(
            project, path, size, sha256, "application/octet-stream", overwrite=True
        )
        return api.ConfirmUploadResponse(object=self._info(stored))

    def _info(self, stored: StoredObject) -> pb.ObjectInfo:
        return pb.ObjectInfo(
            project=stored.project,
            path=stored.path,
            size=stored.size,
            sha256=stored.sha256,
            content_type=stored.content_type,
            create_time=timestamps.to_proto(stored.create_time),
            update_time=timestamps.to_proto(stored.update_time),
            uri=self._backend.uri(self._backend.key(stored.project, stored.path)),
        )


async def _refuse(stream: AsyncIterator[api.UploadRequest], context: Context) -> None:
    """Says "rejected", then reads what the client still sends until it half-closes,
    so the error status does not overtake a write (which grpc would report as INTERNAL)."""
    await context.send_initial_metadata(((STREAM_VERDICT_HEADER, "rejected"),))
    with contextlib.suppress(Exception):
        for _ in range(REFUSED_DRAIN):
            if await anext(stream, None) is None:
                return


async def _header(stream: AsyncIterator[api.UploadRequest]) -> api.UploadHeader:
    first = await anext(stream, None)
    if first is None or first.WhichOneof("part") != "header":
        raise invalid_field("header", "the first message of an upload must be its header")
    return first.header


async def _pump(
    stream: AsyncIterator[api.UploadRequest], reader: VerifyingReader, writing: asyncio.Future[None]
) -> None:
    """Feeds chunks to the writer thread until the finish message. Any failure (a second
    header, a stream that ends without a finish because the client went away) reaches
    the writer, which then gives up without publishing anything."""
    try:
        async for message in stream:
            part = message.WhichOneof("part")
            if part == "finish":
                await _finish(stream, reader, writing, _sha256(message.finish.sha256))
                return
            if part != "chunk":
                raise invalid_field("header", "an upload has exactly one header, first")
            if not await reader.feed(message.chunk, writing):
                return  # the writer failed; awaiting it raises its error
        raise invalid_field("finish", "the upload stream ended without its finish message")
    except BaseException as error:
        await reader.fail(error, writing)
        with contextlib.suppress(BaseException):
            await writing
        raise


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


def _range(offset: int, length: int, size: int) -> tuple[int, int]:
    if offset < 0 or length < 0:
        raise invalid_field("offset" if offset < 0 else "length", "must not be negative")
    if offset > size:
        raise OutOfRange("INVALID_ARGUMENT", f"offset {offset} is past the end ({size} bytes)")
    return offset, min(length or size - offset, size - offset)


def _sha256(value: str) -> str:
    value = value.lower()
    if value and (len(value) != 64 or not set(value) <= _SHA256_HEX):
        raise invalid_field("expected_sha256", "must be 64 hexadecimal characters")
    return value
