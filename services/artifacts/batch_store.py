"""The record of UploadFiles calls (`batches.py`): their files' uploads begun together,
published together in one transaction, and their answers kept under their request ids.

Each file is an upload as `uploads.py` records one: its row refers to its key from
before a byte is written, so the janitor leaves the key alone and a drain of a location
let go of meanwhile ends the upload (`purge.py`), which then refuses to publish. A call
claims its request id as the interceptor claims a recorded write's (`idempotency.py`),
in the transaction that publishes, and keeps its answer there: a repeat is answered
with it without writing anything, and one racing the first waits for its commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from google.protobuf.message import Message

from ..common import idempotency
from ..common.errors import Aborted
from ..common.idempotency import Claim
from .objects import OBJECT_COLUMNS, StoredObject, already_exists
from .publication import PUBLISHES_OF_PROJECT
from .uploads import UPLOAD_EXPIRED, check_open


@dataclass(frozen=True)
class FileUpload:
    """One file of a call, checked, and the fresh key its bytes go under."""

    path: str
    content: bytes
    sha256: str
    content_type: str
    storage_key: str
    upload_id: uuid.UUID


@dataclass(frozen=True)
class Published:
    """What a call's publication did: its answer, kept under its request id, and the
    keys it let go of (those its objects replaced, or its own when it was a repeat)."""

    answer: bytes
    garbage: list[str]


# Makes the answer of a call from the objects it published, in its files' order.
Answer = Callable[[list[StoredObject]], Message]


class BatchUploads:
    """The UploadFiles calls of an `ObjectStore`."""

    _pool: asyncpg.Pool

    async def answered(self, claim: Claim) -> bytes | None:
        """The answer kept for the call this one repeats, if it was published.

        Raises:
            InvalidArgument: the id was the caller's with another request (REQUEST_ID_REUSED).
        """
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_CLAIMS, claim.method, claim.request_id.keys)
        repeated = claim.request_id.repeated(rows)
        return None if repeated is None else _answer(repeated, claim)

    async def begin_files(self, project: str, files: Sequence[FileUpload], overwrite: bool) -> None:
        """Records each file's upload under its key.

        Raises:
            FailedPrecondition: a path lies in a closed location (LOCATION_DELETED).
        """
        async with self._pool.acquire() as conn:
            await check_open(conn, project, *(file.path for file in files))
            await conn.execute(
                """INSERT INTO artifacts.uploads
                       (upload_id, storage_key, project, path, overwrite, content_type)
                   SELECT upload_id, storage_key, $1, path, $2, content_type
                   FROM unnest($3::uuid[], $4::text[], $5::text[], $6::text[])
                       AS file (upload_id, storage_key, path, content_type)""",
                project,
                overwrite,
                [file.upload_id for file in files],
                [file.storage_key for file in files],
                [file.path for file in files],
                [file.content_type for file in files],
            )

    async def publish_files(
        self,
        project: str,
        files: Sequence[FileUpload],
        overwrite: bool,
        claim: Claim | None,
        answer: Answer,
    ) -> Published:
        """Makes each file's key the object at its path, all in one transaction, and keeps
        the call's answer under its request id (claim), unless it repeats a call that
        published: that one's answer is returned, and this call's keys are garbage.

        Raises:
            FailedPrecondition: a path lies in a closed location (LOCATION_DELETED).
            Aborted: an upload of the call was ended before it published (UPLOAD_EXPIRED):
                by the janitor, or by a drain of a location let go of since it began.
            AlreadyExists: a path holds an object and overwrite is false.
            InvalidArgument: the request id was the caller's with another request
                (REQUEST_ID_REUSED).
        """
        async with self._pool.acquire() as conn, conn.transaction():
            key: str | None = None
            if claim is not None:
                found = await idempotency.claim_key(conn, "artifacts", claim)
                if not isinstance(found, str):  # a repeat, past `answered` as the first ran
                    return Published(_answer(found, claim), await _spend(conn, files))
                key = found
            await _lock(conn, project, files)
            begun = await _take_uploads(conn, project, files)
            replaced = await _replaced(conn, project, files, overwrite)
            rows = await conn.fetch(_INSERT, project, *_columns(files), begun)
            stored = {row["path"]: StoredObject(**dict(row)) for row in rows}
            kept = answer([stored[file.path] for file in files]).SerializeToString()
            if claim is not None and key is not None:
                await conn.execute(_KEEP, claim.method, key, kept)
            if replaced:
                await conn.execute(_GARBAGE, replaced)
        return Published(kept, replaced)

    async def abandon_files(self, files: Sequence[FileUpload]) -> list[str]:
        """Gives up the uploads of a call that did not publish; their keys whose rows went
        here, now garbage (none when the call published after all, or the janitor took
        the rows)."""
        async with self._pool.acquire() as conn:
            return await _spend(conn, files)


async def _lock(conn: asyncpg.Connection, project: str, files: Sequence[FileUpload]) -> None:
    """The locks one upload's publication takes (`publication.py`), for every path: the
    project's, shared, then the paths' in one order, that of their names, so that two
    calls sharing paths take them in turn, never each holding one the other waits for."""
    await conn.execute(f"SELECT pg_advisory_xact_lock_shared({PUBLISHES_OF_PROJECT})", project)
    await conn.execute(
        "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM unnest($1::text[]) k",
        sorted(f"{project}/{file.path}" for file in files),
    )


async def _take_uploads(
    conn: asyncpg.Connection, project: str, files: Sequence[FileUpload]
) -> datetime:
    """Spends the call's uploads; returns when they began. Statements after the locks:
    they see a drain's or a close's work committed meanwhile."""
    taken = await conn.fetch(
        """DELETE FROM artifacts.uploads WHERE upload_id = ANY($1::uuid[])
           RETURNING upload_id, create_time""",
        [file.upload_id for file in files],
    )
    await check_open(conn, project, *(file.path for file in files))
    spent = {row["upload_id"] for row in taken}
    if gone := [file.path for file in files if file.upload_id not in spent]:
        raise Aborted(
            UPLOAD_EXPIRED,
            f"the upload of {gone[0]!r} (and of {len(gone) - 1} other files of the call) "
            "ended before it published: the janitor took it, or a garbage collection "
            "removed a directory it was begun in; upload again",
            metadata={"path": gone[0]},
        )
    begun: datetime = min(row["create_time"] for row in taken)
    return begun


async def _replaced(
    conn: asyncpg.Connection, project: str, files: Sequence[FileUpload], overwrite: bool
) -> list[str]:
    """The keys of the objects the files replace; AlreadyExists without overwrite."""
    current = await conn.fetch(
        """SELECT path, storage_key FROM artifacts.objects
           WHERE project = $1 AND path = ANY($2::text[]) FOR UPDATE""",
        project,
        [file.path for file in files],
    )
    if current and not overwrite:
        taken = {row["path"] for row in current}
        raise already_exists(next(file.path for file in files if file.path in taken))
    return [row["storage_key"] for row in current]


async def _spend(conn: asyncpg.Connection, files: Sequence[FileUpload]) -> list[str]:
    """Ends the call's uploads still waiting; their keys, now garbage."""
    rows = await conn.fetch(
        """WITH gone AS (
               DELETE FROM artifacts.uploads WHERE upload_id = ANY($1::uuid[])
               RETURNING storage_key
           ), spent AS (
               INSERT INTO artifacts.garbage (storage_key)
               SELECT storage_key FROM gone ON CONFLICT DO NOTHING
           )
           SELECT storage_key FROM gone""",
        [file.upload_id for file in files],
    )
    return [row["storage_key"] for row in rows]


def _answer(row: asyncpg.Record, claim: Claim) -> bytes:
    """The answer a claim of claim's keeps, unless it was another request's."""
    if row["fingerprint"] != claim.fingerprint:
        raise idempotency.request_id_reused(claim.request_id.sent)
    return bytes(row["response"])


def _columns(files: Sequence[FileUpload]) -> tuple[list[object], ...]:
    return (
        [file.path for file in files],
        [len(file.content) for file in files],
        [file.sha256 for file in files],
        [file.content_type for file in files],
        [file.storage_key for file in files],
    )


_CLAIMS = """SELECT request_id, caller, fingerprint, response FROM artifacts.requests
             WHERE method = $1 AND request_id = ANY($2::text[])"""
_KEEP = "UPDATE artifacts.requests SET response = $3 WHERE method = $1 AND request_id = $2"
_GARBAGE = "INSERT INTO artifacts.garbage (storage_key) SELECT unnest($1::text[])"
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
