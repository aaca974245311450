"""Uploads in progress: begun under a fresh key, found again, given up or expired."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import asyncpg

from ..common.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from ..common.idempotency import RequestId
from . import paths
from .backends import new_key

UPLOAD_COLUMNS = (
    "upload_id, storage_key, project, path, overwrite, content_type, multipart_id, "
    "expected_size, expected_sha256, part_size"
)
# The reason an upload is answered with once its row is gone (see `upload_expired`).
UPLOAD_EXPIRED = "UPLOAD_EXPIRED"
# Which uploads a call may take: "put", those of a presigned PUT URL (ConfirmUpload);
# "parts", those of presigned parts, whose multipart upload and announced size are
# recorded (CompleteUploadTicket; one begun before sizes were recorded cannot complete).
UploadKind = Literal["put", "parts"]
KIND_CONDITIONS = {
    "put": "multipart_id IS NULL",
    "parts": "multipart_id IS NOT NULL AND expected_size IS NOT NULL AND part_size IS NOT NULL",
}


@dataclass(frozen=True)
class PendingUpload:
    """An upload in progress: its bytes go under storage_key, and nowhere else."""

    upload_id: uuid.UUID
    storage_key: str
    project: str
    path: str
    overwrite: bool
    content_type: str
    # The S3 multipart upload of presigned parts (see `record_parts`).
    multipart_id: str | None = None
    # What an upload of presigned parts announced: its completion is held to it.
    expected_size: int | None = None
    expected_sha256: str | None = None
    # The size of its parts but the last, as their URLs were made.
    part_size: int | None = None


class Uploads:
    """The uploads of an `ObjectStore`, from `begin` until publication (`publication.py`),
    abandonment or expiry."""

    _pool: asyncpg.Pool

    async def begin(
        self,
        project: str,
        path: str,
        overwrite: bool,
        content_type: str = "",
        url_expires: timedelta | None = None,
        request_id: RequestId | None = None,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
    ) -> PendingUpload:
        """Records an upload under a fresh key; url_expires for a presigned PUT or
        parts, whose call's request_id makes a repeat of the call find this upload
        again (kept at least as long as the repeat's URLs, which it signs with its own
        lifetime); the expected size and sha256 of an upload of parts.

        Raises:
            FailedPrecondition: path lies in a closed location (LOCATION_DELETED).
            InvalidArgument: request_id began another upload: of another path,
                overwrite or content type (REQUEST_ID_REUSED); that one is left as it is.
        """
        upload_id = uuid.uuid4()
        async with self._pool.acquire() as conn:
            # Refused in a closed location, which spares the transfer (publish decides).
            row = await conn.fetchrow(
                f"""INSERT INTO artifacts.uploads
                        (upload_id, storage_key, project, path, overwrite, content_type,
                         url_expire_time, request_id, expected_size, expected_sha256)
                    SELECT $1::uuid, $2::text, $3::text, $4::text, $5::boolean, $6::text,
                           clock_timestamp() + $7::interval, $8::text, $9::bigint, $10::text
                    WHERE NOT {in_closed_location("$3", "$11")}
                    ON CONFLICT (project, request_id) DO UPDATE SET url_expire_time =
                        greatest(uploads.url_expire_time, excluded.url_expire_time)
                    WHERE (uploads.path, uploads.overwrite, uploads.content_type)
                        = (excluded.path, excluded.overwrite, excluded.content_type)
                    RETURNING {UPLOAD_COLUMNS}""",
                upload_id,
                new_key(project, upload_id.hex),
                project,
                path,
                overwrite,
                content_type,
                url_expires,
                # the user's own: another user's call under the id is not a repeat
                None if request_id is None else request_id.own_key or request_id.sent,
                expected_size,
                expected_sha256 or None,
                paths.enclosing(path),
            )
            if row is None:
                await check_open(conn, project, path)
                # Not closed: the id's upload asks for another (a repeat is signed
                # anew with its own type, so another upload's would fail its confirm).
                raise InvalidArgument(
                    "REQUEST_ID_REUSED",
                    "this request id began another upload (its path, overwrite or "
                    "content type differ); send a new id with every call",
                )
        return PendingUpload(**dict(row))

    async def record_parts(
        self, upload: PendingUpload, multipart_id: str, part_size: int
    ) -> PendingUpload:
        """Notes the multipart upload begun for an upload's presigned parts, and their
        size: completing the upload takes both from here, never from the client.

        Raises:
            Aborted: the upload expired meanwhile (UPLOAD_EXPIRED).
        """
        async with self._pool.acquire() as conn:
            recorded = await conn.fetchval(
                """UPDATE artifacts.uploads SET multipart_id = $2, part_size = $3
                   WHERE upload_id = $1 RETURNING true""",
                upload.upload_id,
                multipart_id,
                part_size,
            )
        if not recorded:
            raise upload_expired(upload)
        return dataclasses.replace(upload, multipart_id=multipart_id, part_size=part_size)

    async def upload(
        self, project: str, path: str, upload_id: uuid.UUID, kind: UploadKind
    ) -> PendingUpload:
        """An upload of this kind begun for this path and not yet published or expired."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"""SELECT {UPLOAD_COLUMNS} FROM artifacts.uploads
                    WHERE upload_id = $1 AND project = $2 AND path = $3
                      AND {KIND_CONDITIONS[kind]}""",
                upload_id,
                project,
                path,
            )
            if row is None:
                await check_open(conn, project, path)  # ended by its run's collection
        if row is None:
            raise upload_not_found(upload_id, path)
        return PendingUpload(**dict(row))

    async def pending(
        self, project: str, path: str, upload_id: uuid.UUID, kind: UploadKind
    ) -> bool:
        """Whether that upload is begun for this path and not yet published or expired."""
        try:
            await self.upload(project, path, upload_id, kind)
        except NotFound:
            return False
        return True

    async def still_waiting(self, upload: PendingUpload) -> bool:
        """Whether upload is still begun: not expired, published or given up since."""
        async with self._pool.acquire() as conn:
            return bool(
                await conn.fetchval(
                    "SELECT true FROM artifacts.uploads WHERE upload_id = $1", upload.upload_id
                )
            )

    async def expired_instead(self, upload: PendingUpload) -> Aborted | FailedPrecondition | None:
        """UPLOAD_EXPIRED when the janitor took upload while its bytes were written
        (LOCATION_DELETED when its run's collection did): the write's own failure then
        (its file's folder, or its S3 multipart upload, removed under it) would tell the
        client INTERNAL, or call again. None while it waits, or when the database cannot
        say (the write's failure stands)."""
        try:
            if await self.still_waiting(upload):
                return None
            async with self._pool.acquire() as conn:
                await check_open(conn, upload.project, upload.path)
        except FailedPrecondition as closed:
            return closed
        except Exception:
            return None
        return upload_expired(upload)

    async def abandon(self, upload: PendingUpload, lease: uuid.UUID | None = None) -> list[str]:
        """Gives up an upload that did not publish; returns its key when its row went
        here, the key now garbage (nothing when publishing committed after all, or the
        janitor or another call took the row). With `lease`, the token of a completion
        (`leases.py`), only while that completion holds the upload."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """WITH gone AS (
                       DELETE FROM artifacts.uploads
                       WHERE upload_id = $1 AND ($2::uuid IS NULL OR completion = $2)
                       RETURNING storage_key
                   ), spent AS (
                       INSERT INTO artifacts.garbage (storage_key)
                       SELECT storage_key FROM gone ON CONFLICT DO NOTHING
                   )
                   SELECT storage_key FROM gone""",
                upload.upload_id,
                lease,
            )
        return [row["storage_key"] for row in rows]

    async def expire_uploads(self, older_than: timedelta) -> int:
        """Turns uploads begun (or whose presigned URL expired) before the threshold into
        garbage, but not one a completion holds (`leases.py`); a publication racing
        this either wins or finds its upload gone."""
        async with self._pool.acquire() as conn:
            expired = await conn.fetch(
                """WITH gone AS (
                       DELETE FROM artifacts.uploads
                       WHERE coalesce(url_expire_time, create_time)
                             < clock_timestamp() - $1::interval
                         AND (completing_until IS NULL OR completing_until < clock_timestamp())
                       RETURNING storage_key
                   )
                   INSERT INTO artifacts.garbage (storage_key) SELECT storage_key FROM gone
                   ON CONFLICT DO NOTHING RETURNING storage_key""",
                older_than,
            )
        return len(expired)


def in_closed_location(project: str, folders: str) -> str:
    """The condition that a path, of the project and enclosing folders (paths.enclosing)
    the parameters named hold, lies in a closed location (a collected run's directory,
    `purge.py`): one drained, or queued to be (with the services deployed apart, the
    drain may come an hour later)."""
    return f"""(EXISTS (SELECT FROM artifacts.closed_locations
                        WHERE project = {project} AND path = ANY({folders}::text[]))
                OR EXISTS (SELECT FROM operations.discarded_locations
                           WHERE closed AND project = {project}
                             AND path = ANY({folders}::text[])))"""


async def check_open(conn: asyncpg.Connection, project: str, *written: str) -> None:
    """Raises LOCATION_DELETED when a path written lies in a closed location
    (`in_closed_location`), naming one that does."""
    folders = {folder: path for path in reversed(written) for folder in paths.enclosing(path)}
    closed = await conn.fetchval(
        """SELECT path FROM artifacts.closed_locations
           WHERE project = $1 AND path = ANY($2::text[])
           UNION ALL
           SELECT path FROM operations.discarded_locations
           WHERE closed AND project = $1 AND path = ANY($2::text[])
           LIMIT 1""",
        project,
        list(folders),
    )
    if closed is not None:
        path = folders[closed]
        raise FailedPrecondition(
            "LOCATION_DELETED",
            f"{path!r} lies in {closed!r}, deleted for good with the run that kept it; "
            "nothing can be written there",
            metadata={"path": path},
        )


def upload_not_found(upload_id: uuid.UUID, path: str) -> NotFound:
    return NotFound(
        "UPLOAD_NOT_FOUND",
        f"no upload {upload_id} to {path!r} is waiting: it was confirmed already, "
        "it expired, a garbage collection removed the directory it was begun in, or it "
        "was never begun",
        metadata={"upload_id": str(upload_id), "path": path},
    )


def upload_expired(upload: PendingUpload) -> Aborted:
    return Aborted(
        UPLOAD_EXPIRED,
        f"upload {upload.upload_id} to {upload.path!r} is no longer waiting: it outlived "
        "the janitor's threshold, a garbage collection removed the directory it was "
        "begun in, or another call completed it or gave it up; upload again",
        metadata={"upload_id": str(upload.upload_id), "path": upload.path},
    )


def being_completed(upload_id: uuid.UUID, why: str) -> Aborted:
    return Aborted(
        "UPLOAD_BEING_COMPLETED",
        f"upload {upload_id} is being completed or its completion has ended ({why}); call again",
        metadata={"upload_id": str(upload_id)},
    )
