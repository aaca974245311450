"""UploadFiles: many small files stored in one call, all of them or none.

A tree of small files sent one upload each cost every file a stream, a sha256 check, two
syncs and twelve statements in two transactions: a client, server and database on two
cores stored fewer small files a second than MLflow's proxy, which records nothing.
Here a call's files share one transaction, one lock of their project and a handful of
statements.

The call is a recorded write (`idempotency.py`): it runs in its call's transaction, after
its request id's claim, so a repeat answers what the first stored. Each file is written
under a fresh key (`backends.new_key`) before any is published; the keys are published
together under the locks one upload's publication takes (`publication.py`), and the
files' uploads count as begun once the project's lock is held. A drain of one of the
project's locations waits for the call to end, and removes what it stored when the
location was let go of after that (`purge.py`). Keys a failed call wrote are removed
here; those of a call whose process died are referred to by no row, and the janitor
removes them once they are older than any upload takes.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from cairn.artifacts.v1 import artifacts_service_pb2 as api

from ..common import validation as common
from ..common.errors import invalid_field
from ..common.idempotency import after_commit
from . import paths, threads
from .backends import Backend, new_key
from .janitor import Janitor
from .objects import OBJECT_COLUMNS, StoredObject, already_exists
from .publication import PUBLISHES_OF_PROJECT
from .streams import verify
from .upload_fields import DEFAULT_CONTENT_TYPE, content_type_field, sha256_field
from .uploads import check_open

# The most files of one call. Its answer, kept under its request id for the retention,
# is then some hundreds of kilobytes at most (paths of 1 KiB and their URIs): a small
# share of a request that carried the files.
MAX_FILES = 100
# The files of one call written at once, each on a store thread: a sync of each file
# and its folder (or a PUT to S3) waits on the disk or the network, not on the CPU.
WRITES_AT_ONCE = 8


@dataclass(frozen=True)
class FileToStore:
    """One file of a call, checked, and the fresh key its bytes go under."""

    path: str
    content: bytes
    sha256: str
    content_type: str
    storage_key: str


def files_of(request: api.UploadFilesRequest, project: str) -> list[FileToStore]:
    """The request's files, each checked against its sha256.

    Raises:
        InvalidArgument: no file or more than MAX_FILES, a path that is invalid or given
            twice, a sha256 missing or invalid, a content type that is not ASCII.
        DataLoss: a file's content does not match its sha256 (CHECKSUM_MISMATCH).
    """
    if not 1 <= len(request.files) <= MAX_FILES:
        raise invalid_field("files", f"must hold 1 to {MAX_FILES} files, not {len(request.files)}")
    files, seen = [], set()
    for index, file in enumerate(request.files):
        field = f"files[{index}]"
        path = paths.new_object_path(file.path, f"{field}.path")
        if path in seen:
            raise invalid_field(f"{field}.path", f"{path!r} is given twice", "INVALID_PATH")
        seen.add(path)
        expected = sha256_field(file.sha256, f"{field}.sha256")
        if not expected:
            raise invalid_field(f"{field}.sha256", "is required: the sha256 of content")
        content_type = content_type_field(file.content_type, f"{field}.content_type")
        verify(len(file.content), hashlib.sha256(file.content).hexdigest(), 0, expected)
        key = new_key(project, uuid.uuid4().hex)
        files.append(
            FileToStore(path, file.content, expected, content_type or DEFAULT_CONTENT_TYPE, key)
        )
    return files


class FileBatches:
    """The UploadFiles calls of an artifact service."""

    def __init__(self, pool: asyncpg.Pool, backend: Backend, janitor: Janitor) -> None:
        self._pool, self._backend, self._janitor = pool, backend, janitor

    async def store(self, request: api.UploadFilesRequest) -> list[StoredObject]:
        """Stores the request's files (`files_of`), each at its path; returns the objects,
        in the files' order.

        Raises:
            FailedPrecondition: a path lies in a closed location (LOCATION_DELETED).
            AlreadyExists: a path holds an object and overwrite is false.
            as `files_of` for a file refused, and as the backend's writes.
        """
        project = common.project(request.project)
        files = files_of(request, project)
        writing: asyncio.Future[None] | None = None
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                begun = await _hold_project(conn, project)
                writing = asyncio.ensure_future(_write_all(self._backend, files))
                await asyncio.shield(writing)
                stored, replaced = await _publish_all(
                    conn, project, files, request.overwrite, begun
                )
        except BaseException:
            if writing is not None:
                self._janitor.remove_once_ended(writing, [file.storage_key for file in files])
            raise
        await after_commit(lambda: self._janitor.collect(replaced))
        return stored


async def _hold_project(conn: asyncpg.Connection, project: str) -> datetime:
    """Holds the project's publishes lock, shared, until the call's transaction ends: a
    drain of one of its locations waits for the call. Returns when the call's files
    count as begun, once the lock is held."""
    begun: datetime = await conn.fetchval(
        f"""SELECT clock_timestamp()
            FROM (SELECT pg_advisory_xact_lock_shared({PUBLISHES_OF_PROJECT})) AS held""",
        project,
    )
    return begun


async def _write_all(backend: Backend, files: Sequence[FileToStore]) -> None:
    """Writes every file's bytes under its key, WRITES_AT_ONCE at a time; raises the first
    failure once every write ended."""
    groups = [files[start::WRITES_AT_ONCE] for start in range(WRITES_AT_ONCE)]
    ended = await asyncio.gather(
        *(threads.in_store(_write_each, backend, group) for group in groups if group),
        return_exceptions=True,
    )
    for outcome in ended:
        if isinstance(outcome, BaseException):
            raise outcome


def _write_each(backend: Backend, files: Sequence[FileToStore]) -> None:
    for file in files:
        content = io.BytesIO(file.content)
        backend.write(file.storage_key, content, file.content_type, len(file.content))


async def _publish_all(
    conn: asyncpg.Connection,
    project: str,
    files: Sequence[FileToStore],
    overwrite: bool,
    begun: datetime,
) -> tuple[list[StoredObject], list[str]]:
    """Makes each file's key the object at its path; returns the objects, in the files'
    order, and the keys they replaced, now garbage."""
    # The paths' locks in one order, that of their names: two calls sharing paths take
    # them in turn, never each holding one the other waits for.
    locks = sorted(f"{project}/{file.path}" for file in files)
    await conn.execute(
        "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM unnest($1::text[]) k",
        locks,
    )
    # Statements after the locks: they see a close committed meanwhile.
    await check_open(conn, project, *(file.path for file in files))
    current = await conn.fetch(
        """SELECT path, storage_key FROM artifacts.objects
           WHERE project = $1 AND path = ANY($2::text[]) FOR UPDATE""",
        project,
        [file.path for file in files],
    )
    if current and not overwrite:
        taken = {row["path"] for row in current}
        raise already_exists(next(file.path for file in files if file.path in taken))
    rows = await conn.fetch(_INSERT, project, *_columns(files), begun)
    replaced = [row["storage_key"] for row in current]
    if replaced:
        await conn.execute(
            "INSERT INTO artifacts.garbage (storage_key) SELECT unnest($1::text[])", replaced
        )
    stored = {row["path"]: StoredObject(**dict(row)) for row in rows}
    return [stored[file.path] for file in files], replaced


def _columns(files: Sequence[FileToStore]) -> tuple[list[object], ...]:
    return (
        [file.path for file in files],
        [len(file.content) for file in files],
        [file.sha256 for file in files],
        [file.content_type for file in files],
        [file.storage_key for file in files],
    )


_INSERT = f"""
INSERT INTO artifacts.objects
    (project, path, size, sha256, content_type, storage_key, upload_begin_time)
SELECT $1, path, size, sha256, content_type, storage_key, $7
FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[])
    AS file (path, size, sha256, content_type, storage_key)
ON CONFLICT (project, path) DO UPDATE SET size = excluded.size,
    sha256 = excluded.sha256, content_type = excluded.content_type,
    storage_key = excluded.storage_key, request_id = NULL, caller = NULL,
    upload_begin_time = excluded.upload_begin_time, update_time = clock_timestamp()
RETURNING {OBJECT_COLUMNS}"""
