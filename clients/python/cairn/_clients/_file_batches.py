"""A tree's small files move in batches (docs/artifacts.md, "Trees"). Up, each batch is
one UploadFiles call stored whole or not at all: one upload a file cost each a stream,
two syncs and two transactions of the server's, and on two cores left `upload_tree`
behind MLflow's, which records nothing. Down, each is one DownloadFiles call, each of
its files written whole or not at all: a stream a file held a directory's download to
about 890 files of 4 KiB a second.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from .._backoff import Offer, backoff
from .._headers import Metadata
from .._progress import Meter
from .._transport import Transport
from .._workers import ended
from ..artifacts.v1 import artifacts_service_pb2 as api
from ..artifacts.v1 import artifacts_service_pb2_grpc
from ..exceptions import DataLossError, ResourceExhaustedError, UnimplementedError
from ..types._artifacts import ObjectInfo, object_from_proto
from ._deadlines import within
from ._direct_transfers import BUSY_BACKOFF_SECONDS, UPLOADS_BUSY
from ._local_files import landing, reading

# The server's most files a call (batches.MAX_FILES).
BATCH_FILES = 100
# The most content bytes of a batch: with the framing of BATCH_FILES paths of 1 KiB, a
# sha256 and a content type each, under 1 MiB, the least message a server may be given
# (CAIRN_MAX_MESSAGE_BYTES). A file larger than this is an upload of its own.
BATCH_BYTES = 768 * 1024


T = TypeVar("T")
# A file of a tree to upload: the local file, its size, its path in the store.
LocalFile = tuple[Path, int, str]


@dataclasses.dataclass(frozen=True)
class Batch(Generic[T]):
    """Small files of a tree that move in one call, and how many bytes they hold."""

    files: list[T]
    size: int


def batched(
    files: Sequence[T], size_of: Callable[[T], int], alone: Callable[[int], bool]
) -> Iterator[Batch[T] | T]:
    """The files in their order: those of BATCH_BYTES or less that need not go alone
    (by direct transfer) in batches of consecutive ones (a batch of one file is that
    file), each other one by itself."""
    batch: list[T] = []
    held = 0
    for file in files:
        size = size_of(file)
        if size > BATCH_BYTES or alone(size):
            yield file
            continue
        if len(batch) == BATCH_FILES or held + size > BATCH_BYTES:
            yield _of(batch, held)
            batch, held = [], 0
        batch.append(file)
        held += size
    if batch:
        yield _of(batch, held)


def _of(batch: list[T], size: int) -> Batch[T] | T:
    return batch[0] if len(batch) == 1 else Batch(batch, size)


class FileBatches:
    """Sends batches over a project's transport; UNIMPLEMENTED from a server of a
    release before UploadFiles is the caller's to answer (by uploads of each file)."""

    def __init__(
        self, streams: Transport, stub: artifacts_service_pb2_grpc.ArtifactServiceStub
    ) -> None:
        self._streams, self._stub = streams, stub

    async def send(
        self,
        batch: Batch[LocalFile],
        overwrite: bool,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> tuple[list[ObjectInfo], int, list[LocalFile]]:
        """Stores the batch's files, read and sent within timeout; returns what they
        became, in the batch's order, how many bytes they held, and the files that grew
        past their listed size since, not sent: each is the caller's to upload alone (a
        log still written to may grow without end). An OSError of a file's read names
        the file."""
        async with within(timeout, f"the upload of {len(batch.files)} files"):
            files, grown = await asyncio.to_thread(_read, batch)
            if not files:
                return [], 0, grown
            request = api.UploadFilesRequest(
                project=self._streams.project, files=files, overwrite=overwrite
            )
            reply = await self._unary_when_admitted(request, timeout, metadata)
        sent = sum(len(file.content) for file in files)
        return [object_from_proto(stored) for stored in reply.objects], sent, grown

    async def _unary_when_admitted(
        self, request: api.UploadFilesRequest, timeout: float | None, metadata: Metadata | None
    ) -> api.UploadFilesResponse:
        """The call, sent again after a backoff while the server refuses it UPLOADS_BUSY
        (nothing stored), as an upload is."""
        waits = backoff(*BUSY_BACKOFF_SECONDS)
        while True:
            try:
                return await self._streams.unary(
                    self._stub.UploadFiles, request, timeout=timeout, metadata=metadata
                )
            except ResourceExhaustedError as error:
                if error.reason != UPLOADS_BUSY:
                    raise
            await asyncio.sleep(next(waits))


class FileFetches:
    """Brings batches down over a project's transport. A server of a release before
    DownloadFiles (UNIMPLEMENTED) is asked again NOT_OFFERED_SECONDS later; meanwhile
    every file is the caller's to download alone."""

    def __init__(
        self, transport: Transport, stub: artifacts_service_pb2_grpc.ArtifactServiceStub
    ) -> None:
        self._transport, self._stub = transport, stub
        self._offer = Offer()

    @property
    def offered(self) -> bool:
        """Whether the server serves DownloadFiles, as far as this client knows: when not,
        files are better handed to the caller one by one than in batches it gives back."""
        return self._offer.standing

    async def fetch(
        self,
        batch: Batch[T],
        where: Callable[[T], tuple[str, Path]],
        counted: Meter,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> list[T]:
        """Writes each file of batch (where: its path in the store and the local file it
        becomes) whose bytes the answer holds, checked first against the size and sha256
        of the object the answer describes (the one at its path as the call ran, as a
        Download brings it); returns the others, each the caller's to download alone (no
        room was left for it, no object is at its path, or the store could not read it
        whole: that download tells why). The call and the writes end within timeout.

        Raises:
            DataLossError: CHECKSUM_MISMATCH, bytes that are not the described object's;
                nothing of the batch is written then.
        """
        if not self._offer.standing:
            return batch.files
        places = [where(file) for file in batch.files]
        async with within(timeout, f"the download of {len(places)} files"):
            answered = await self._answered([path for path, _ in places], timeout, metadata)
            if answered is None:
                return batch.files
            arrived, left = sorted_answer(batch.files, places, answered)
            await _written(arrived)
        for _, content in arrived:
            counted.part(len(content)).reach(len(content))
        return left

    async def _answered(
        self, paths: list[str], timeout: float | None, metadata: Metadata | None
    ) -> Sequence[api.FileDownload] | None:
        """The answer's files; None from a server without DownloadFiles."""
        request = api.DownloadFilesRequest(project=self._transport.project, paths=paths)
        try:
            reply = await self._transport.unary(
                self._stub.DownloadFiles, request, timeout=timeout, metadata=metadata
            )
        except UnimplementedError:
            self._offer.withdraw()  # a server of a release before
            return None
        return reply.files


def sorted_answer(
    files: list[T], places: list[tuple[str, Path]], answered: Sequence[api.FileDownload]
) -> tuple[list[tuple[Path, bytes]], list[T]]:
    """The bytes an answer holds, each checked (`_checked`) with the local file it
    becomes, and the files that came without them: those whose entry holds no content or
    describes another path than asked; all of them from an answer of another count
    than asked (no server of Cairn's sends one)."""
    if len(answered) != len(files):
        return [], files
    arrived, left = [], []
    for file, (path, target), entry in zip(files, places, answered, strict=True):
        if entry.HasField("content") and entry.object.path == path:
            arrived.append((target, _checked(entry)))
        else:
            left.append(file)
    return arrived, left


def _checked(file: api.FileDownload) -> bytes:
    """file's bytes, checked against its object's size and sha256."""
    content, stored = file.content, file.object  # each read of a bytes field copies it
    received = hashlib.sha256(content).hexdigest()
    if len(content) != stored.size or received != stored.sha256:
        raise DataLossError(
            f"{stored.path!r} arrived as {len(content)} bytes of sha256 {received}, but was "
            f"stored as {stored.size} of {stored.sha256}",
            reason="CHECKSUM_MISMATCH",
            metadata={"path": stored.path, "sha256": received, "expected_sha256": stored.sha256},
        )
    return content


async def _written(files: list[tuple[Path, bytes]]) -> None:
    """Writes each file whole, on a thread; a call that ends meanwhile (its timeout, a
    cancel) stops the writes at the next file and returns once the thread has ended, so
    nothing is written after the call (into a folder its caller then removes)."""
    stop = threading.Event()
    writing = asyncio.ensure_future(asyncio.to_thread(_write_each, files, stop))
    try:
        await asyncio.shield(writing)
    finally:
        stop.set()
        await ended(writing)


def _write_each(files: list[tuple[Path, bytes]], stop: threading.Event) -> None:
    for target, content in files:
        if stop.is_set():
            return
        with landing(target) as temporary:
            temporary.write_bytes(content)


def _read(batch: Batch[LocalFile]) -> tuple[list[api.FileContent], list[LocalFile]]:
    """The batch's files within their listed sizes, and those that grew past them."""
    files, grown = [], []
    for entry in batch.files:
        file, size, path = entry
        with reading(file), file.open("rb") as source:
            content = source.read(size + 1)  # no more: it may have grown without end
        if len(content) > size:
            grown.append(entry)
            continue
        sha256 = hashlib.sha256(content).hexdigest()
        files.append(api.FileContent(path=path, content=content, sha256=sha256))
    return files, grown
