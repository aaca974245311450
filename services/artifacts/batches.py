"""UploadFiles: many small files stored in one call, all of them or none.

A tree of small files sent one upload each cost every file a stream, a sha256 check, two
syncs and twelve statements in two transactions: a client, server and database on two
cores stored fewer small files a second than MLflow's proxy, which records nothing. Here
a call's files are begun in one statement, written on one writer thread, and published
in one transaction (`batch_store.py`).

Each file goes as one upload does: its upload is recorded under a fresh key before its
bytes are written, with no connection or lock held while they are, and published under
the locks one upload's publication takes. A call that fails gives its uploads up once
its writes ended; one whose process died leaves them to the janitor's expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import uuid
from collections.abc import Callable, Sequence

from cairn.artifacts.v1 import artifacts_pb2 as pb
from cairn.artifacts.v1 import artifacts_service_pb2 as api

from ..common import access
from ..common import validation as common
from ..common.errors import DataLoss, invalid_field
from ..common.idempotency import Claim, RequestId, fingerprint_of
from . import paths, threads
from .backends import Backend, new_key
from .batch_store import FileUpload
from .janitor import Janitor
from .objects import StoredObject
from .slots import UploadAdmission
from .store import ObjectStore
from .streams import verify
from .upload_fields import DEFAULT_CONTENT_TYPE, content_type_field, sha256_field
from .upload_messages import to_its_end

# The most files of one call. Its answer, kept under its request id for the retention,
# is then some hundreds of kilobytes at most (paths of 1 KiB and their URIs): a small
# share of a request that carried the files.
MAX_FILES = 100
# The request ids of UploadFiles calls are claimed under its name, as the interceptor
# claims a recorded write's.
METHOD = "/cairn.artifacts.v1.ArtifactService/UploadFiles"


def files_of(request: api.UploadFilesRequest, project: str) -> list[FileUpload]:
    """The request's files, each checked against its sha256, under fresh keys.

    Raises:
        InvalidArgument: no file or more than MAX_FILES, a path that is invalid or given
            twice, a sha256 missing or invalid, a content type that is not ASCII.
        DataLoss: a file's content does not match its sha256 (CHECKSUM_MISMATCH).
    """
    if not 1 <= len(request.files) <= MAX_FILES:
        raise invalid_field("files", f"must hold 1 to {MAX_FILES} files, not {len(request.files)}")
    files: list[FileUpload] = []
    seen: set[str] = set()
    for index, file in enumerate(request.files):
        files.append(_file_of(file, f"files[{index}]", project, seen))
    return files


def _file_of(file: api.FileContent, field: str, project: str, seen: set[str]) -> FileUpload:
    path = paths.new_object_path(file.path, f"{field}.path")
    if path in seen:
        raise invalid_field(f"{field}.path", f"{path!r} is given twice", "INVALID_PATH")
    seen.add(path)
    expected = sha256_field(file.sha256, f"{field}.sha256")
    if not expected:
        raise invalid_field(f"{field}.sha256", "is required: the sha256 of content")
    content_type = content_type_field(file.content_type, f"{field}.content_type")
    content = file.content  # a copy of the message's bytes at each read of the field
    try:
        verify(len(content), hashlib.sha256(content).hexdigest(), 0, expected)
    except DataLoss as mismatch:
        metadata = {**mismatch.metadata, "path": path}
        raise DataLoss(mismatch.reason, f"{field}: {mismatch.message}", metadata=metadata) from None
    upload_id = uuid.uuid4()
    return FileUpload(
        path,
        content,
        expected,
        content_type or DEFAULT_CONTENT_TYPE,
        new_key(project, upload_id.hex),
        upload_id,
    )


class FileBatches:
    """The UploadFiles calls of an artifact service: `info` describes a stored object."""

    def __init__(
        self,
        objects: ObjectStore,
        backend: Backend,
        janitor: Janitor,
        admission: UploadAdmission,
        stopping: asyncio.Event,
        info: Callable[[StoredObject], pb.ObjectInfo],
    ) -> None:
        self._objects, self._backend, self._janitor = objects, backend, janitor
        self._admission, self._stopping, self._info = admission, stopping, info

    async def store(
        self, request: api.UploadFilesRequest, request_id: RequestId | None
    ) -> api.UploadFilesResponse:
        """Stores the request's files (`files_of`), each at its path; answers the objects,
        in the files' order. A repeat under request_id of a call that published answers
        that call's objects, and writes nothing.

        Raises:
            as `files_of`, `ObjectStore.begin_files` and `publish_files`, and
            ResourceExhausted (UPLOADS_BUSY) or Unavailable (SHUTTING_DOWN) as an
            upload waiting for a writer (`slots.UploadAdmission`).
        """
        project = common.project(request.project)
        self._admission.check_room()  # before any work, as `held` would refuse it after
        # Hashing megabytes of content: on a thread, not the event loop.
        files = await asyncio.to_thread(files_of, request, project)
        claim = None
        if request_id is not None:
            caller = access.current_caller()
            fingerprint = await asyncio.to_thread(fingerprint_of, request, caller)
            claim = Claim(METHOD, request_id, fingerprint)
            if (kept := await self._objects.answered(claim)) is not None:
                return api.UploadFilesResponse.FromString(kept)
        writing: asyncio.Future[None] | None = None
        try:
            await self._objects.begin_files(project, files, request.overwrite)
            # Its content counts against the uploads' memory while it is written.
            async with self._admission.held(sum(len(file.content) for file in files)):
                given_up = threading.Event()
                writing = threads.start_upload(_put_each, self._backend, files, given_up)
                await to_its_end(writing, given_up.set, self._stopping)
            await access.admit_again()  # its caller's key or role may be gone since
            published = await self._objects.publish_files(
                project, files, request.overwrite, claim, self._answer
            )
        except BaseException:
            self._janitor.beside_calls(self._give_up(files, writing))
            raise
        await self._janitor.collect(published.garbage)
        return api.UploadFilesResponse.FromString(published.answer)

    def _answer(self, stored: list[StoredObject]) -> api.UploadFilesResponse:
        return api.UploadFilesResponse(objects=[self._info(each) for each in stored])

    async def _give_up(
        self, files: Sequence[FileUpload], writing: asyncio.Future[None] | None
    ) -> None:
        """Gives up the uploads of a call that failed, once its writes ended: a write
        that ended after its key's removal would leave its bytes behind. When the
        database cannot say whether the call published, nothing is removed here."""
        if writing is not None:
            await asyncio.wait({writing})
            if not writing.cancelled():
                writing.exception()  # the call's to tell: retrieved, not logged as lost
        with contextlib.suppress(Exception):
            await self._janitor.collect(await self._objects.abandon_files(files))


class GivenUp(Exception):
    """Ends the writes of a call cancelled as it waited for them."""


def _put_each(backend: Backend, files: Sequence[FileUpload], given_up: threading.Event) -> None:
    """Writes each file, until the call is given up (cancelled as it waits)."""
    for file in files:
        if given_up.is_set():
            raise GivenUp
        backend.put(file.storage_key, file.content, file.content_type)
