"""The record of what lives at each path: published objects, uploads in progress and
keys whose bytes are to be removed.

The publication protocol, whose every step is one transaction here:
1. `begin` records an upload and its fresh storage key before any byte is written.
2. `publish` turns the upload into the object at its path: one winner per path,
   decided here; the key it replaces (if any) becomes garbage in the same transaction.
3. Bytes are removed only for keys in `garbage` (`janitor.py`), after the commit that
   put them there. A crash between any two steps leaves the old object or the new one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import asyncpg

from ..common import idempotency, paging
from ..common.errors import (
    Aborted,
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from ..common.idempotency import RequestId
from ..common.sql import Params, unguarded
from . import paths, repeats
from .backends import new_key

_COLUMNS = "project, path, size, sha256, content_type, storage_key, create_time, update_time"
UPLOAD_COLUMNS = (
    "upload_id, storage_key, project, path, overwrite, content_type, multipart_id, "
    "expected_size, expected_sha256, part_size"
)
# The bytes of a removal of up to this many objects are removed within the call; those
# of more, by the janitor beside the calls.
COLLECTED_IN_CALL = 1000
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


# The advisory lock of a project's publishes ($1 the project): each publish holds it
# shared until it commits, and a drain of one of the project's locations takes it
# whole before it deletes, so that its DELETE sees every object a publish inserted
# before (an uncommitted one it would miss, and the location would be marked done).
PUBLISHES_OF_PROJECT = "hashtextextended($1, 1)"


@dataclass(frozen=True)
class StoredObject:
    project: str
    path: str
    size: int
    sha256: str
    content_type: str
    storage_key: str
    create_time: datetime
    update_time: datetime


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


class ObjectStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def exists(self, project: str, path: str) -> bool:
        async with self._pool.acquire() as conn:
            found = await conn.fetchval(
                "SELECT 1 FROM artifacts.objects WHERE project = $1 AND path = $2", project, path
            )
        return found is not None

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
                    WHERE NOT {_closed("$3", "$11")}
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
                await _check_open(conn, project, path)
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
                await _check_open(conn, project, path)  # ended by its run's collection
        if row is None:
            raise _upload_not_found(upload_id, path)
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
                await _check_open(conn, upload.project, upload.path)
        except FailedPrecondition as closed:
            return closed
        except Exception:
            return None
        return upload_expired(upload)

    async def publish(
        self,
        upload: PendingUpload,
        size: int,
        sha256: str,
        content_type: str,
        consumes: PendingUpload | None = None,
        request_id: RequestId | None = None,
        lease: uuid.UUID | None = None,
    ) -> tuple[StoredObject, str | None]:
        """Makes the upload's bytes the object at its path; returns the object and the
        storage key it replaced, now garbage. `consumes` is the presigned upload whose
        bytes were copied into this one: it is spent in the same transaction, and its
        key becomes garbage. `request_id` is that of the call publishing (see
        `published_by`): what it publishes is recorded under it in the same
        transaction; when it published already, what it published is returned
        (whatever is at the path now) and this upload's key is the garbage. `lease` is
        the token of the completion holding the upload (`leases.py`): only that one
        publishes it.

        Raises:
            AlreadyExists: an object is at the path and the upload may not overwrite it.
            Aborted: the upload expired (the janitor took its key) before publishing
                (UPLOAD_EXPIRED), or its lease lapsed and another completion holds it
                (UPLOAD_BEING_COMPLETED).
            NotFound: the consumed upload was confirmed already (UPLOAD_NOT_FOUND).
            InvalidArgument: the request id published another object (REQUEST_ID_REUSED).
        """
        async with self._pool.acquire() as conn, conn.transaction():
            # Publishers of one path take turns, so the key read below is the one
            # replaced; a drain waits for the project's publishes under way (purge.py).
            await conn.execute(
                f"SELECT pg_advisory_xact_lock_shared({PUBLISHES_OF_PROJECT}), "
                "pg_advisory_xact_lock(hashtextextended($2, 0))",
                upload.project,
                f"{upload.project}/{upload.path}",
            )
            # A statement after the locks: it sees a drain's close committed meanwhile.
            begun = await conn.fetchval(
                f"""DELETE FROM artifacts.uploads
                    WHERE upload_id = $1 AND completion IS NOT DISTINCT FROM $2
                      AND NOT {_closed("$3", "$4")}
                    RETURNING create_time""",
                upload.upload_id,
                lease,
                upload.project,
                paths.enclosing(upload.path),
            )
            if begun is None:
                await _check_open(conn, upload.project, upload.path)
                raise await _not_publishable(conn, upload, lease)
            claimed = await _claim(conn, upload, request_id, size, sha256) if request_id else None
            if isinstance(claimed, StoredObject):
                done = claimed
                # A repeat of the call that published under this id, past its
                # `published_by` check while the first still ran (the claim waited for
                # its commit): answered with what it published, and this upload's key
                # (and the one it consumes, if still waiting) is garbage.
                repeats.check(done, sha256, size, content_type)
                if consumes is not None:
                    await _spend(conn, consumes, required=False)
                await _collect(conn, upload.storage_key)
                return done, upload.storage_key
            if consumes is not None:
                # The bytes published are the consumed upload's: so is their beginning.
                begun = min(begun, await _spend(conn, consumes) or begun)
            current = await conn.fetchrow(
                f"""SELECT {_COLUMNS}, request_id, caller FROM artifacts.objects
                    WHERE project = $1 AND path = $2 FOR UPDATE""",
                upload.project,
                upload.path,
            )
            if (
                claimed is not None
                and current is not None
                and current["request_id"] == claimed
                and request_id is not None
                and request_id.repeated([current]) is not None
            ):
                # Published before its publication was recorded (0009), or recorded
                # past the retention: once, too, and of the same bytes.
                done = _object(current)
                repeats.check(done, sha256, size, content_type)
                await _record(conn, claimed, done)
                await _collect(conn, upload.storage_key)
                return done, upload.storage_key
            replaced = None if current is None else current["storage_key"]
            if replaced is not None and not upload.overwrite:
                raise already_exists(upload.path)
            row = await conn.fetchrow(
                f"""INSERT INTO artifacts.objects
                        (project, path, size, sha256, content_type, storage_key, request_id,
                         caller, upload_begin_time)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                    ON CONFLICT (project, path) DO UPDATE SET size = excluded.size,
                        sha256 = excluded.sha256, content_type = excluded.content_type,
                        storage_key = excluded.storage_key, request_id = excluded.request_id,
                        caller = excluded.caller, upload_begin_time = excluded.upload_begin_time,
                        update_time = clock_timestamp()
                    RETURNING {_COLUMNS}""",
                upload.project,
                upload.path,
                size,
                sha256,
                content_type,
                upload.storage_key,
                claimed,
                None if request_id is None else request_id.user,
                begun,
            )
            published = StoredObject(**dict(row))
            if claimed is not None:
                await _record(conn, claimed, published)
            if replaced is not None:
                await _collect(conn, replaced)
        return published, replaced

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

    async def condemn(self, keys: list[str]) -> int:
        """Makes garbage of those keys that no object and no upload refers to."""
        async with self._pool.acquire() as conn:
            condemned = await conn.fetch(
                """INSERT INTO artifacts.garbage (storage_key)
                   SELECT k FROM unnest($1::text[]) AS k
                   WHERE NOT EXISTS (SELECT 1 FROM artifacts.objects o WHERE o.storage_key = k)
                     AND NOT EXISTS (SELECT 1 FROM artifacts.uploads u WHERE u.storage_key = k)
                   ON CONFLICT DO NOTHING RETURNING storage_key""",
                keys,
            )
        return len(condemned)

    async def live_keys(self, keys: list[str]) -> set[str]:
        """Those keys an upload in progress writes under."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT storage_key FROM artifacts.uploads WHERE storage_key = ANY($1::text[])",
                keys,
            )
        return {row["storage_key"] for row in rows}

    async def garbage(self, limit: int) -> list[str]:
        """The oldest keys whose bytes are to be removed. Two janitors may both take a
        key: removing bytes twice is harmless, and a garbage key is never used again."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT storage_key FROM artifacts.garbage ORDER BY since LIMIT $1", limit
            )
        return [row["storage_key"] for row in rows]

    async def postpone(self, keys: list[str]) -> None:
        """Puts garbage keys whose bytes could not be removed behind the others."""
        async with self._pool.acquire() as conn:
            await conn.execute(
                """UPDATE artifacts.garbage SET since = clock_timestamp()
                   WHERE storage_key = ANY($1::text[])""",
                keys,
            )

    async def forget(self, keys: list[str]) -> None:
        """Called once the bytes of the keys are gone."""
        async with self._pool.acquire() as conn:
            await conn.execute(
                "DELETE FROM artifacts.garbage WHERE storage_key = ANY($1::text[])", keys
            )

    async def published_by(
        self, project: str, path: str, request_id: RequestId | None
    ) -> StoredObject | None:
        """What the call with this request id published, if it did: what a repeat of
        that call answers, even once the object at path was replaced or removed.

        Raises:
            InvalidArgument: the id published at another path, or in another project
                (REQUEST_ID_REUSED).
        """
        if request_id is None:
            return None
        async with self._pool.acquire() as conn:
            return await _published(conn, project, path, request_id)

    async def get(self, project: str, path: str) -> StoredObject:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM artifacts.objects WHERE project = $1 AND path = $2",
                project,
                path,
            )
        if row is None:
            raise NotFound("OBJECT_NOT_FOUND", f"no object at {path!r}", metadata={"path": path})
        return StoredObject(**dict(row))

    async def remove(self, project: str, path: str, recursive: bool) -> Removed:
        """Unpublishes the object at path, or every object under it as a directory; their
        storage keys become garbage.

        A directory goes in one statement without the statement timeout, which would
        end every try at one large enough (about 7 s per million objects here); the
        call's deadline bounds it instead. Pieces, tried first, cost more than they
        saved: a piece after a bulk of new objects, before statistics, read every row
        left (200,000 objects took 9 s in pieces, 1.3 s at once)."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not recursive:
                end = path + _LEAST_CHARACTER  # the object at path alone
                return Removed.of(await conn.fetchrow(_REMOVE, project, path, end))
            await unguarded(conn)
            return Removed.of(await conn.fetchrow(_REMOVE, project, path, _past(path)))

    async def list(
        self, project: str, prefix: str, recursive: bool, page_size: int, page_token: str
    ) -> paging.ListPage[StoredObject | str]:
        """Entries in path order; one level folds deeper paths into "dir/" prefixes (the
        strings among them).

        A page reads about its own size from the (project, path) index, however many
        objects the prefix holds: a range of it for a recursive listing, and for one
        level a jump past each folded directory's objects."""
        keyset = paging.Keyset(
            [paging.SortColumn("entry", True, "text", "entry")],
            "objects",
            project,
            prefix,
            recursive,
        )
        last = keyset.last(page_token)
        params = Params(project, _start(prefix, recursive, last), len(prefix) + 1)
        end = _past(prefix)
        within = f"AND o.path < {params.add(end)}" if end else ""
        limit = params.add(page_size + 1)
        statement = _list_all(within, limit) if recursive else _list_level(within, limit)
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(statement, *params.values)
        entries: list[StoredObject | str] = [
            prefix + r["entry"]
            if r["entry"].endswith("/")
            else StoredObject(**{k: r[k] for k in _COLUMNS.split(", ")})
            for r in rows[:page_size]
        ]
        return paging.ListPage(
            entries, keyset.next_token(rows, page_size), lambda n: keyset.next_token(rows, n)
        )


# Paths hold no NUL: path || _LEAST_CHARACTER is the least path after path.
_LEAST_CHARACTER = "\x01"


def _start(prefix: str, recursive: bool, last: list[str] | None) -> str:
    """The least path of a listing's page: the prefix itself on the first (an object at
    it comes first, as S3 lists it), else past the last entry, and past a folded
    directory's every object."""
    if last is None:
        return prefix
    entry = prefix + last[0]
    folded = not recursive and entry.endswith("/")
    return (_past(entry) if folded else None) or entry + _LEAST_CHARACTER


def _past(prefix: str) -> str | None:
    """The least string after every string that starts with prefix, in the "C"
    collation's order (code point order, which UTF-8 keeps); None for an empty prefix."""
    kept = prefix.rstrip("\U0010ffff")
    if not kept:
        return None
    following = ord(kept[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:  # surrogates are no characters of a text
        following = 0xE000
    return kept[:-1] + chr(following)


@dataclass(frozen=True)
class Removed:
    """What a removal unpublished: how many objects, and their storage keys when they
    were COLLECTED_IN_CALL at most; the keys of more are left to the janitor."""

    count: int
    keys: list[str]

    @classmethod
    def of(cls, row: asyncpg.Record) -> Removed:
        count, keys = row
        return cls(count, keys if count <= COLLECTED_IN_CALL else [])


# Unpublishes the objects of project $1 from path $2 on and before path $3 (a range of
# the primary key): how many, and up to one more than COLLECTED_IN_CALL of the storage
# keys that became garbage.
_REMOVE = f"""
WITH gone AS (
    DELETE FROM artifacts.objects WHERE project = $1 AND path >= $2 AND path < $3
    RETURNING storage_key
), queued AS (
    INSERT INTO artifacts.garbage (storage_key) SELECT storage_key FROM gone
    RETURNING storage_key
)
SELECT (SELECT count(*) FROM queued),
    ARRAY(SELECT storage_key FROM queued LIMIT {COLLECTED_IN_CALL} + 1)"""


def _list_all(within: str, limit: str) -> str:
    """Every object from $2 on, in path order: a range of the primary key. $3 is where
    the part after the prefix starts."""
    return f"""SELECT substr(o.path, $3) AS entry, o.* FROM artifacts.objects o
               WHERE o.project = $1 AND o.path >= $2 {within} ORDER BY o.path LIMIT {limit}"""


def _list_level(within: str, limit: str) -> str:
    """One level from $2 on: the first object of each entry, found by one probe of the
    primary key per entry. After a file the next probe starts past it; after an object
    in a directory, past the directory (its "dir/" with the "/" made "0", the next
    character)."""
    rest = "substr(l.path, $3)"
    return f"""WITH RECURSIVE level (path) AS (
            SELECT (SELECT o.path FROM artifacts.objects o
                    WHERE o.project = $1 AND o.path >= $2 {within} ORDER BY o.path LIMIT 1)
          UNION ALL
            SELECT (SELECT o.path FROM artifacts.objects o
                    WHERE o.project = $1 {within} AND o.path >= CASE
                        WHEN strpos({rest}, '/') > 0
                        THEN left(l.path, $3 - 2 + strpos({rest}, '/')) || '0'
                        ELSE l.path || chr(1) END
                    ORDER BY o.path LIMIT 1)
            FROM level l WHERE l.path IS NOT NULL
        )
        SELECT CASE WHEN strpos({rest}, '/') > 0 THEN left({rest}, strpos({rest}, '/'))
                    ELSE {rest} END AS entry, o.*
        FROM (SELECT path FROM level WHERE path IS NOT NULL LIMIT {limit}) l
        JOIN artifacts.objects o ON o.project = $1 AND o.path = l.path
        ORDER BY l.path"""


def already_exists(path: str) -> AlreadyExists:
    return AlreadyExists(
        "OBJECT_ALREADY_EXISTS",
        f"an object exists at {path!r}; upload with overwrite to replace it",
        metadata={"path": path},
    )


def bytes_missing(path: str) -> DataLoss:
    """A recorded object's bytes the store holds none or fewer of: removed or cut short
    behind the service's back. Whichever path reads them says so alike."""
    return DataLoss(
        "OBJECT_BYTES_MISSING",
        f"the bytes of {path!r} are missing from the artifact store",
        metadata={"path": path},
    )


# The method under which `requests` keeps the request id of a publication (0009).
_PUBLICATION = "publication"
# What was published under keys of request ids, with the caller of each claim.
_PUBLISHED = f"""SELECT {_COLUMNS}, request_id,
                        (SELECT caller FROM artifacts.requests r
                         WHERE r.method = p.method AND r.request_id = p.request_id) AS caller
                 FROM artifacts.publications p
                 WHERE method = '{_PUBLICATION}' AND request_id = ANY($1::text[])"""


def _object(row: asyncpg.Record) -> StoredObject:
    return StoredObject(
        **{field.name: row[field.name] for field in dataclasses.fields(StoredObject)}
    )


async def _published(
    conn: asyncpg.Connection, project: str, path: str, request_id: RequestId
) -> StoredObject | None:
    """What request_id published (see `published_by`)."""
    row = request_id.repeated(await conn.fetch(_PUBLISHED, request_id.keys))
    if row is not None:
        return _same_call(_object(row), project, path, request_id.sent)
    # Published before publications were recorded (0009), or recorded past the
    # retention: the object it left, while nothing replaced it.
    row = request_id.repeated(
        await conn.fetch(
            f"""SELECT {_COLUMNS}, request_id, caller FROM artifacts.objects
                WHERE project = $1 AND path = $2 AND request_id = ANY($3::text[])""",
            project,
            path,
            request_id.keys,
        )
    )
    return None if row is None else _object(row)


def _same_call(done: StoredObject, project: str, path: str, request_id: str) -> StoredObject:
    """done, unless the call naming project and path cannot be a repeat of the one that
    published it. Another project is not named back: its caller may not see it."""
    if done.project != project:
        raise idempotency.request_id_reused(request_id)
    if done.path != path:
        raise repeats.request_id_reused(done)
    return done


async def _claim(
    conn: asyncpg.Connection, upload: PendingUpload, request_id: RequestId, size: int, sha256: str
) -> str | StoredObject:
    """The key under which request_id is claimed for the upload's publication, or what
    the id published already. A claim under way in another transaction is waited for:
    two publications under one id take turns, and the second finds what the first did."""
    fingerprint = hashlib.sha256(
        f"{upload.project}\0{upload.path}\0{size}\0{sha256}".encode()
    ).digest()
    claim = idempotency.Claim(_PUBLICATION, request_id, fingerprint)
    while True:
        found = await idempotency.claim_key(conn, "artifacts", claim)
        if isinstance(found, str):
            return found
        rows = await conn.fetch(_PUBLISHED, [found["request_id"]])
        if rows:
            return _same_call(_object(rows[0]), upload.project, upload.path, request_id.sent)
        # else forgotten (past its retention) since the claim failed: claim again


async def _record(conn: asyncpg.Connection, key: str, done: StoredObject) -> None:
    """Records what the request id claimed under key published, under that claim."""
    await conn.execute(
        f"""INSERT INTO artifacts.publications (method, request_id, {_COLUMNS})
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
        _PUBLICATION,
        key,
        *(getattr(done, field.name) for field in dataclasses.fields(StoredObject)),
    )


def _closed(project: str, folders: str) -> str:
    """The condition that a path, of the project and enclosing folders (paths.enclosing)
    the parameters named hold, lies in a closed location (a collected run's directory,
    `purge.py`): one drained, or queued to be (with the services deployed apart, the
    drain may come an hour later)."""
    return f"""(EXISTS (SELECT FROM artifacts.closed_locations
                        WHERE project = {project} AND path = ANY({folders}::text[]))
                OR EXISTS (SELECT FROM operations.discarded_locations
                           WHERE closed AND project = {project}
                             AND path = ANY({folders}::text[])))"""


async def _check_open(conn: asyncpg.Connection, project: str, path: str) -> None:
    """Raises LOCATION_DELETED when path lies in a closed location (`_closed`)."""
    closed = await conn.fetchval(
        """SELECT path FROM artifacts.closed_locations
           WHERE project = $1 AND path = ANY($2::text[])
           UNION ALL
           SELECT path FROM operations.discarded_locations
           WHERE closed AND project = $1 AND path = ANY($2::text[])
           LIMIT 1""",
        project,
        paths.enclosing(path),
    )
    if closed is not None:
        raise FailedPrecondition(
            "LOCATION_DELETED",
            f"{path!r} lies in {closed!r}, deleted for good with the run that kept it; "
            "nothing can be written there",
            metadata={"path": path},
        )


async def _collect(conn: asyncpg.Connection, key: str) -> None:
    await conn.execute("INSERT INTO artifacts.garbage (storage_key) VALUES ($1)", key)


async def _spend(
    conn: asyncpg.Connection, upload: PendingUpload, required: bool = True
) -> datetime | None:
    """Spends a consumed upload; returns when it began (None when it was spent already,
    which is UPLOAD_NOT_FOUND when required)."""
    begun: datetime | None = await conn.fetchval(
        """WITH gone AS (
               DELETE FROM artifacts.uploads WHERE upload_id = $1
               RETURNING storage_key, create_time
           ), spent AS (
               INSERT INTO artifacts.garbage (storage_key) SELECT storage_key FROM gone
           )
           SELECT create_time FROM gone""",
        upload.upload_id,
    )
    if begun is None and required:
        raise _upload_not_found(upload.upload_id, upload.path)
    return begun


async def _not_publishable(
    conn: asyncpg.Connection, upload: PendingUpload, lease: uuid.UUID | None
) -> Aborted:
    """Why an upload's row could not be taken to publish it."""
    if lease is not None and await conn.fetchval(
        "SELECT true FROM artifacts.uploads WHERE upload_id = $1", upload.upload_id
    ):
        return being_completed(upload.upload_id, "its lease lapsed and another call holds it")
    return upload_expired(upload)


def _upload_not_found(upload_id: uuid.UUID, path: str) -> NotFound:
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
