"""How `ArtifactClient.upload` sends one object: its attempts under one request id, the
waits between them, and each attempt, by direct transfer or streamed through the
service in chunks hashed as they are read; and how `upload_tree` sends a tree's files,
several at once. Apart from artifacts.py, which keeps the public methods and what they
check of their arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path

from .._backoff import Offer, backoff
from .._channels import resent_after
from .._headers import REQUEST_ID_HEADER, Metadata, with_id
from .._progress import Meter, Progress, meter
from .._transport import Transport
from .._workers import ended
from ..artifacts.v1 import artifacts_service_pb2 as api
from ..artifacts.v1 import artifacts_service_pb2_grpc
from ..exceptions import CairnError, ResourceExhaustedError, UnimplementedError
from ..types._artifacts import ObjectInfo, object_from_proto
from ._deadlines import within
from ._direct_transfers import (
    BUSY_BACKOFF_SECONDS,
    UPLOAD_RETRY_WAITS,
    UPLOADS_BUSY,
    CompletionFailed,
    DirectTransfers,
    Upload,
)
from ._downloads import tree_label
from ._file_batches import Batch, FileBatches, LocalFile, batched
from ._local_files import (
    NOTHING_SENT,
    Resendable,
    Source,
    files_in,
    local_reads,
    open_source,
    size_of,
)
from ._many_files import moves_alone, upload_each

# What an upload sends a message: under 1 MiB with its framing, the least message a
# server may be given (CAIRN_MAX_MESSAGE_BYTES); 1 MiB whole was refused by such a one.
CHUNK = 1023 * 1024


class Uploads:
    """The uploads of one ArtifactClient: streamed over streams (its project's transport
    without a default deadline), or direct when the object is of threshold() bytes or
    more and the server offers it."""

    def __init__(
        self,
        streams: Transport,
        stub: artifacts_service_pb2_grpc.ArtifactServiceStub,
        direct: DirectTransfers,
        threshold: Callable[[], int | None],
    ) -> None:
        self._streams, self._stub, self._direct = streams, stub, direct
        self._threshold = threshold
        self._batches = FileBatches(streams, stub)
        # Withdrawn when the server answers UploadFiles UNIMPLEMENTED: trees go file by file.
        self._batches_offered = Offer()

    async def send(
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
        async with within(timeout, f"the upload of {path!r}") as deadline:
            return await self._attempts(upload, deadline)

    async def tree(
        self,
        path: str,
        local_dir: Path,
        folder: str,
        overwrite: bool,
        progress: Progress,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> list[ObjectInfo]:
        """Every file under local_dir at path/<its relative path> (folder: path as a
        folder of the store), several at once (`upload_each`); what was stored, in path
        order, or the first failure once those under way ended."""
        files = await asyncio.to_thread(_files_under, local_dir, folder)
        total = sum(size for _, size in files)
        # Each file is a write of its own: a request id given is not theirs to share.
        metadata = [(key, value) for key, value in metadata or () if key != REQUEST_ID_HEADER]
        threshold = self._threshold()
        targets = [(file, size, _target(path, file.relative_to(local_dir))) for file, size in files]
        with meter(progress, "upload", tree_label(path, len(files)), total) as counted:
            # What is stored, by path, as each call ends: a batch sent file by file (to a
            # server of a release before UploadFiles) fails partway with some stored.
            stored: dict[str, ObjectInfo] = {}

            async def send_one(file: Path, size: int, target: str) -> None:
                part = counted.part(size)
                info = await self.send(target, file, overwrite, None, part, timeout, metadata)
                stored[info.path] = info

            async def send(parcel: Batch[LocalFile] | LocalFile) -> None:
                if not isinstance(parcel, Batch):
                    return await send_one(*parcel)
                if self._batches_offered.standing:
                    try:
                        sent, size, grown = await self._batches.send(
                            parcel, overwrite, timeout, metadata
                        )
                    except UnimplementedError:
                        self._batches_offered.withdraw()  # a server of a release before
                    else:
                        stored.update((info.path, info) for info in sent)
                        counted.part(size).reach(size)
                        for file in grown:
                            await send_one(*file)
                        return
                for file in parcel.files:
                    await send_one(*file)

            def alone(size: int) -> bool:
                return moves_alone(size, threshold)

            moved = await upload_each(
                list(batched(targets, lambda file: file[1], alone)),
                send,
                lambda parcel: not isinstance(parcel, Batch) and alone(parcel[1]),
            )
            if moved.failure is not None:
                parcel, error = moved.failure
                with local_reads(_failed_file(parcel, error), _stored_of(len(stored), len(files))):
                    raise error
        return [stored[target] for _, _, target in targets]

    async def _attempts(self, upload: Upload, deadline: asyncio.Timeout) -> ObjectInfo:
        """The upload, sent again under its request id after UNAVAILABLE or a transaction
        conflict (resent_after) when it can be (not after its completion failed: see
        `DirectTransfers._complete_upload`), or after UPLOADS_BUSY, unless the wait would
        outlast the deadline: the last error is raised."""
        waits, busy_waits = iter(UPLOAD_RETRY_WAITS), backoff(*BUSY_BACKOFF_SECONDS)
        loop = asyncio.get_running_loop()
        while True:
            try:
                return await self._once(upload)
            except CairnError as error:
                wait, ends = _wait_after(error, upload, waits, busy_waits), deadline.when()
                if wait is None or (ends is not None and loop.time() + wait >= ends):
                    raise
                await asyncio.sleep(wait)

    async def _once(self, upload: Upload) -> ObjectInfo:
        source = upload.source
        size = await asyncio.to_thread(size_of, source)
        if self._direct.goes_direct(size, self._threshold()) and isinstance(source, Resendable):
            direct = await self._direct.upload(upload)
            if direct is not None:
                return direct
        stream, size, expected, owned = open_source(source)
        digest = hashlib.sha256()
        header = upload.header(self._streams.project, size, expected)

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


def _wait_after(
    error: CairnError, upload: Upload, waits: Iterator[float], busy_waits: Iterator[float]
) -> float | None:
    """How long the upload waits before it is sent again after error; None: it is not.
    Refused UPLOADS_BUSY, it waits without end but its deadline's, as it would have in
    the server's queue."""
    if isinstance(error, ResourceExhaustedError) and error.reason == UPLOADS_BUSY:
        return next(busy_waits)
    if (
        not resent_after(error)
        or not isinstance(upload.source, Resendable)
        or isinstance(error, CompletionFailed)
    ):
        return None
    return next(waits, None)


async def _read_ahead(read: Callable[[], bytes]) -> AsyncGenerator[bytes, None]:
    """The chunks of a blocking read until it returns nothing, each read in a thread
    while the caller still sends the one before."""
    pending = asyncio.ensure_future(asyncio.to_thread(read))
    try:
        while chunk := await asyncio.shield(pending):
            pending = asyncio.ensure_future(asyncio.to_thread(read))
            yield chunk
    finally:
        await ended(pending)  # a read still running ends before its file may be closed


def _target(path: str, relative: Path) -> str:
    """Where a tree's file goes: under path, at its relative path."""
    return f"{path.rstrip('/')}/{relative.as_posix()}" if path.strip("/") else relative.as_posix()


def _failed_file(parcel: Batch[LocalFile] | LocalFile, error: Exception) -> Path:
    """The file whose read failed a parcel: a batch's OSError names it (`reading`)."""
    if not isinstance(parcel, Batch):
        return parcel[0]
    named = getattr(error, "filename", None)
    return Path(named) if named is not None else parcel.files[0][0]


def _files_under(base: Path, under: str) -> list[tuple[Path, int]]:
    """Every file under base, in path order, with its size (see `files_in`)."""
    if not base.is_dir():
        raise NotADirectoryError(f"{base} is not a directory")
    files = [base / relative for relative in files_in(base, under)]
    return [(file, _size(file)) for file in files]


def _size(file: Path) -> int:
    # A file removed since files_in listed it: LOCAL_READ_FAILED as well.
    with local_reads(file, NOTHING_SENT):
        return file.stat().st_size


def _stored_of(count: int, total: int) -> str:
    """What an upload_tree of total files leaves when one could not be read and count of
    them were stored (several go at once: not only those before it in path order); none,
    in the words of a file refused before the upload began."""
    if not count:
        return NOTHING_SENT
    return f"{count} of the tree's {total} files are stored, each whole, it and the others not"
