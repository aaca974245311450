"""A tree's small files go up in batches, each batch one UploadFiles call stored whole or
not at all (docs/artifacts.md, "Trees"): one upload a file cost each a stream, two
syncs and two transactions of the server's, and on two cores left `upload_tree` behind
MLflow's, which records nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .._backoff import backoff
from .._headers import Metadata
from .._transport import Transport
from ..artifacts.v1 import artifacts_service_pb2 as api
from ..artifacts.v1 import artifacts_service_pb2_grpc
from ..exceptions import ResourceExhaustedError
from ..types._artifacts import ObjectInfo, object_from_proto
from ._deadlines import within
from ._direct_transfers import BUSY_BACKOFF_SECONDS, UPLOADS_BUSY
from ._local_files import reading

# The server's most files a call (batches.MAX_FILES).
BATCH_FILES = 100
# The most content bytes of a batch: with the framing of BATCH_FILES paths of 1 KiB, a
# sha256 and a content type each, under 1 MiB, the least message a server may be given
# (CAIRN_MAX_MESSAGE_BYTES). A file larger than this is an upload of its own.
BATCH_BYTES = 768 * 1024


@dataclasses.dataclass(frozen=True)
class Batch:
    """Small files of a tree, each as (local file, size, path in the store)."""

    files: list[tuple[Path, int, str]]

    @property
    def size(self) -> int:
        return sum(size for _, size, _ in self.files)


def batched(
    files: Sequence[tuple[Path, int, str]], alone: Callable[[int], bool]
) -> Iterator[Batch | tuple[Path, int, str]]:
    """The files in their order: those of BATCH_BYTES or less that need not go alone
    (by direct transfer) in batches of consecutive ones (a batch of one file is that
    file), each other one by itself."""
    batch: list[tuple[Path, int, str]] = []
    held = 0
    for file in files:
        size = file[1]
        if size > BATCH_BYTES or alone(size):
            yield file
            continue
        if len(batch) == BATCH_FILES or held + size > BATCH_BYTES:
            yield _of(batch)
            batch, held = [], 0
        batch.append(file)
        held += size
    if batch:
        yield _of(batch)


def _of(batch: list[tuple[Path, int, str]]) -> Batch | tuple[Path, int, str]:
    return batch[0] if len(batch) == 1 else Batch(batch)


class FileBatches:
    """Sends batches over a project's transport; UNIMPLEMENTED from a server of a
    release before UploadFiles is the caller's to answer (by uploads of each file)."""

    def __init__(
        self, streams: Transport, stub: artifacts_service_pb2_grpc.ArtifactServiceStub
    ) -> None:
        self._streams, self._stub = streams, stub

    async def send(
        self, batch: Batch, overwrite: bool, timeout: float | None, metadata: Metadata | None
    ) -> tuple[list[ObjectInfo], int, list[tuple[Path, int, str]]]:
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


def _read(batch: Batch) -> tuple[list[api.FileContent], list[tuple[Path, int, str]]]:
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
