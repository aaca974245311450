"""How `ArtifactClient` brings an object's bytes down: the streams `open` reads, opened
again where a cut one stopped and checked against the size and sha256 stored, and the
files and trees `download` writes, each file whole or not at all, by direct transfer
when it can. Apart from artifacts.py, which keeps the public methods and what they
check of their arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar

from .._direct_io import Writable
from .._headers import Metadata, check_timeout
from .._progress import Meter, Progress, meter
from .._transport import Transport
from .._workers import ended
from ..artifacts.v1 import artifacts_pb2 as pb
from ..artifacts.v1 import artifacts_service_pb2 as api
from ..artifacts.v1 import artifacts_service_pb2_grpc
from ..exceptions import (
    AbortedError,
    CairnError,
    DataLossError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from ..types._artifacts import ObjectInfo, object_from_proto
from ._deadlines import Deadline, within
from ._direct_transfers import UPLOAD_RETRY_WAITS, DirectTransfers
from ._file_batches import Batch, FileFetches, batched
from ._local_files import check_length, check_room, file_for, landing, local_writes, tree_files
from ._many_files import download_each, moves_alone

# The reason of a download the server cut because its reader fell behind the pace.
STREAM_STALLED = "STREAM_STALLED"


class Downloads:
    """The downloads of one ArtifactClient: its calls on transport, its byte streams on
    streams (the same project's, without a default deadline), direct when the object is
    of threshold() bytes or more and the server offers it."""

    def __init__(
        self,
        transport: Transport,
        streams: Transport,
        stub: artifacts_service_pb2_grpc.ArtifactServiceStub,
        direct: DirectTransfers,
        threshold: Callable[[], int | None],
    ) -> None:
        self._transport, self._streams, self._stub = transport, streams, stub
        self._direct, self._threshold = direct, threshold
        self.batches = FileFetches(streams, stub)  # a directory's small files, and a model's

    async def stream(
        self, request: api.DownloadRequest, timeout: float | None, metadata: Metadata | None
    ) -> AsyncGenerator[bytes, None]:
        """The bytes request asks for, as `ArtifactClient.open` says."""
        asked = request  # request moves on past what arrived when a stream is cut
        whole = not request.offset and not request.length
        checksum = _Checksum(request.path) if whole else None
        stored: pb.ObjectInfo | None = None
        deadline = Deadline(check_timeout(timeout))
        received = 0  # by every stream together
        waits = iter(UPLOAD_RETRY_WAITS)
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
                if not received or not _resumable(error) or deadline.passed():
                    raise
                if not moved:  # opened again too soon: a server restarting, say
                    await _wait_again(waits, deadline, error)
                    continue
                waits = iter(UPLOAD_RETRY_WAITS)
                rest = _after(request, moved)
                if rest is None:  # the cut came after the range's last byte
                    break
                request = rest
        if checksum:
            await checksum.verify()

    async def file(
        self,
        info: ObjectInfo,
        target: Path,
        counted: Meter,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> None:
        """The object of info at target, whole or not at all."""
        with landing(target) as temporary:
            async with within(timeout, f"the download of {info.path!r}"):
                await self._to(info, temporary, counted, timeout, metadata)

    async def _to(
        self,
        info: ObjectInfo,
        temporary: Path,
        counted: Meter,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> None:
        """The object in temporary: over the byte endpoint or from the store when it
        can, else streamed."""
        threshold, start = self._threshold(), counted.done
        if self._direct.goes_direct(info.size, threshold) and await self._direct.download(
            info, temporary, counted, timeout, metadata
        ):
            return
        request = api.DownloadRequest(project=self._transport.project, path=info.path)
        with file_for(temporary, info.size) as out:
            received = 0
            written = _written_behind(out, self.stream(request, timeout, metadata))
            async with contextlib.aclosing(written) as chunks:  # its writes end before out
                async for chunk in chunks:
                    received += len(chunk)
                    # From where this file began: bytes a direct transfer that broke off
                    # moved were shown already.
                    counted.reach(start + received)
        await asyncio.to_thread(check_length, temporary, received)

    def parcels(
        self, files: list[T], size_of: Callable[[T], int], alone: Callable[[int], bool]
    ) -> list[Batch[T] | T]:
        """The files cut in batches (`batched`), or one by one while the server is known
        not to serve DownloadFiles (a batch would come back whole, its files then
        fetched one after another)."""
        if not self.batches.offered:
            return list(files)
        return list(batched(files, size_of, alone))

    async def tree(
        self,
        path: str,
        target: Path,
        progress: Progress,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> Path:
        """Every object under the directory path, at target/<its path under it>."""
        prefix = f"{path.rstrip('/')}/" if path.rstrip("/") else ""  # "": the project's
        # Listed whole first: the transfer's total is known before its first byte, and
        # every local name is checked before one is written.
        request = api.ListObjectsRequest(
            project=self._transport.project, prefix=prefix, recursive=True
        )
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
        left = "the files that were downloaded are there, each whole; download again to finish"
        threshold = self._threshold()
        with (
            local_writes(target, left),
            meter(progress, "download", tree_label(prefix, len(objects)), total) as counted,
        ):

            def alone(size: int) -> bool:
                return moves_alone(size, threshold)

            async def fetch(parcel: Batch[RemoteFile] | RemoteFile) -> None:
                singles = (
                    await self.batches.fetch(parcel, _places, counted, timeout, metadata)
                    if isinstance(parcel, Batch)
                    else [parcel]
                )
                for info, file in singles:  # each of the batch's left out: alone
                    await self.file(info, file, counted.part(info.size), timeout, metadata)

            pairs = list(zip(objects, files, strict=True))
            moved = await download_each(
                self.parcels(pairs, lambda pair: pair[0].size, alone),
                fetch,
                lambda parcel: not isinstance(parcel, Batch) and alone(parcel[0].size),
            )
            if moved.failure is not None:
                raise moved.failure[1]
        return target


# A file of a tree to download: its object, and the local file it becomes.
RemoteFile = tuple[ObjectInfo, Path]
T = TypeVar("T")


def _places(file: RemoteFile) -> tuple[str, Path]:
    return file[0].path, file[1]


def tree_label(path: str, count: int) -> str:
    """What progress shows of a tree's transfer, up or down."""
    return f"{path.rstrip('/') or '.'}/ ({count} file{'s' if count != 1 else ''})"


async def _wait_again(waits: Iterator[float], deadline: Deadline, error: CairnError) -> None:
    """Waits the next of waits before a cut stream is opened again, as uploads wait
    before they are sent again: a stream's own resends (Transport.server_stream), about
    0.7 s in all, end within the second a channel waits before it connects again to a
    server that refused it, and a download cut by a server's restart failed 9 times in
    9. Raises error once waits or the deadline run out."""
    wait, left = next(waits, None), deadline.left()
    if wait is None or (left is not None and left <= wait):
        raise error
    await asyncio.sleep(wait)


def _resumable(error: CairnError) -> bool:
    """Whether a download cut by error may go on where it stopped."""
    return isinstance(error, UnavailableError) or error.reason == STREAM_STALLED


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


async def _written_behind(
    out: Writable, chunks: AsyncIterator[bytes]
) -> AsyncGenerator[bytes, None]:
    """Passes chunks on while writing each to out in a thread, one write in flight while
    the next chunk arrives; every write has ended when this ends, however it ends (see
    `ended`)."""
    writing: asyncio.Future[int] | None = None
    try:
        async for chunk in chunks:
            if writing is not None:
                await asyncio.shield(writing)
            writing = asyncio.ensure_future(asyncio.to_thread(out.write, chunk))
            yield chunk
        if writing is not None:
            await asyncio.shield(writing)
    finally:
        if writing is not None:
            await ended(writing)
