"""DownloadFiles: the bytes of many small objects in one call.

A tree of small files brought down one Download stream each cost every file a call, a
lookup and a stream on both sides: a client, server and database on two cores moved
about 890 files of 4 KiB a second. Here a call's objects are looked up in one statement,
read by a few store threads at once, each taking the next object as it is done with
one, and answered in one message.

A file this call cannot answer whole (no object at its path, its bytes past what the
answer holds, missing or cut short in the store) is answered without content: its client
downloads it alone, and that answer says why (NOT_FOUND, DATA_LOSS) or brings the object
that replaced it meanwhile. So every rule of a download stays in one place, Download's.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Sequence

from cairn.artifacts.v1 import artifacts_pb2 as pb
from cairn.artifacts.v1 import artifacts_service_pb2 as api

from ..common import validation as common
from ..common.errors import invalid_field
from . import paths, threads
from .backends import Backend, MissingBytes
from .batches import MAX_FILES
from .objects import StoredObject
from .store import ObjectStore

# The most content bytes of one answer, what a client asks for at most (its
# _file_batches.BATCH_BYTES): with MAX_FILES descriptions (paths of 1 KiB, URIs) it
# fits the least message a server may send (CAIRN_MAX_MESSAGE_BYTES, 1 MiB).
CONTENT_BYTES = 768 * 1024
# Threads reading at once for all DownloadFiles calls of a process together, each
# reading a call's objects one after another, a request to the store each: on S3 a
# hundred GETs one after another would take longer than the streams they replace, eight
# at once do not; yet the store's threads (threads.STORE_THREADS, 32) stay free for the
# chunks of streamed downloads, signing and completions, whatever the calls. A call
# takes STORE_READS threads at most, not one an object: that hand-off for each small
# object cost the filesystem backend nearly a third of its files a second.
STORE_READS = 8
# The objects of a call left to read, each by its index in the answer: its threads
# take the next as they finish one, so a slow read holds up none but its own.
Left = queue.SimpleQueue[tuple[int, StoredObject]]
# What a file's entry in the answer takes beside its description and content: the
# tags and lengths of its fields, a few bytes, counted generously.
ENTRY_FRAMING = 16


def paths_of(request: api.DownloadFilesRequest) -> list[str]:
    """The request's paths.

    Raises:
        InvalidArgument: no path or more than MAX_FILES, one invalid or given twice.
    """
    if not 1 <= len(request.paths) <= MAX_FILES:
        raise invalid_field("paths", f"must hold 1 to {MAX_FILES} paths, not {len(request.paths)}")
    seen: set[str] = set()
    for index, value in enumerate(request.paths):
        path = paths.object_path(value, f"paths[{index}]")
        if path in seen:
            raise invalid_field(f"paths[{index}]", f"{path!r} is given twice", "INVALID_PATH")
        seen.add(path)
    return list(request.paths)


class FileReads:
    """The DownloadFiles calls of an artifact service: `info` describes a stored object;
    answers hold at most answer_bytes (the server's largest message, less a reserve)."""

    def __init__(
        self,
        objects: ObjectStore,
        backend: Backend,
        info: Callable[[StoredObject], pb.ObjectInfo],
        answer_bytes: int,
    ) -> None:
        self._objects, self._backend, self._info = objects, backend, info
        self._answer_bytes = answer_bytes
        self._reads = asyncio.Semaphore(STORE_READS)

    async def answer(self, request: api.DownloadFilesRequest) -> api.DownloadFilesResponse:
        project = common.project(request.project)
        wanted = paths_of(request)
        found = await self._objects.get_many(project, wanted)
        files = [
            api.FileDownload(object=self._info(found[path]))
            if path in found
            else api.FileDownload()
            for path in wanted
        ]
        chosen = self._fitting([found.get(path) for path in wanted], files)
        left: Left = queue.SimpleQueue()
        for index in chosen:
            left.put((index, found[wanted[index]]))
        stopped = threading.Event()

        async def read() -> None:
            await self._reads.acquire()
            if left.empty():  # the call's other threads read it all meanwhile
                self._reads.release()
                return
            try:
                reading = threads.start_in_store(_read_left, self._backend, left, stopped)
            except BaseException:  # no thread was started (the process stops)
                self._reads.release()
                raise
            # The share is given back when the thread ends: a call cancelled meanwhile
            # leaves its read running, which must still count.
            reading.add_done_callback(self._read_ended)
            for index, content in await asyncio.shield(reading):
                if content is not None:
                    files[index].content = content

        reading = [asyncio.ensure_future(read()) for _ in range(min(STORE_READS, len(chosen)))]
        try:
            await asyncio.gather(*reading)
        finally:  # the first failure is the call's (a TaskGroup would wrap it): no more reads
            stopped.set()
            for task in reading:
                task.cancel()
        return api.DownloadFilesResponse(files=files)

    def _read_ended(self, reading: asyncio.Future[list[tuple[int, bytes | None]]]) -> None:
        self._reads.release()
        if not reading.cancelled():
            reading.exception()  # retrieved: a call that left asks for it no longer

    def _fitting(
        self, stored: Sequence[StoredObject | None], files: Sequence[api.FileDownload]
    ) -> list[int]:
        """The indexes of the files whose content the answer holds: in order, each that
        still fits beside the descriptions of all."""
        held = sum(file.ByteSize() + ENTRY_FRAMING for file in files)
        content = 0
        chosen = []
        for index, entry in enumerate(stored):
            if entry is None:
                continue
            if content + entry.size <= CONTENT_BYTES and held + entry.size <= self._answer_bytes:
                chosen.append(index)
                content += entry.size
                held += entry.size
        return chosen


def _read_left(
    backend: Backend, left: Left, stopped: threading.Event
) -> list[tuple[int, bytes | None]]:
    """The bytes of the objects taken from left, one after another, each by its index as
    `_whole` reads them, until none is left or stopped is set (its call ended: its
    answer goes nowhere)."""
    read = []
    while not stopped.is_set():
        try:
            index, stored = left.get_nowait()
        except queue.Empty:
            break
        read.append((index, _whole(backend, stored)))
    return read


def _whole(backend: Backend, stored: StoredObject) -> bytes | None:
    """The object's bytes, whole; None when the store holds them no longer or only in
    part (its download alone tells why)."""
    if not stored.size:
        return b""
    try:
        content = b"".join(backend.open(stored.storage_key, 0, stored.size))
    except MissingBytes:
        return None
    return content if len(content) == stored.size else None
