"""Publishing an upload as the object at its path: one winner per path, once per request id."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from datetime import datetime

import asyncpg

from ..common import idempotency
from ..common.errors import Aborted
from ..common.idempotency import RequestId
from . import paths, repeats
from .objects import OBJECT_COLUMNS, StoredObject, already_exists
from .uploads import (
    PendingUpload,
    being_completed,
    check_open,
    in_closed_location,
    upload_expired,
    upload_not_found,
)

# The advisory lock of a project's publishes ($1 the project): each publish holds it
# shared until it commits, and a drain of one of the project's locations takes it
# whole before it deletes, so that its DELETE sees every object a publish inserted
# before (an uncommitted one it would miss, and the location would be marked done).
PUBLISHES_OF_PROJECT = "hashtextextended($1, 1)"

# The method under which `requests` keeps the request id of a publication (0009).
_PUBLICATION = "publication"
# What was published under keys of request ids, with the caller of each claim.
_PUBLISHED = f"""SELECT {OBJECT_COLUMNS}, request_id,
                        (SELECT caller FROM artifacts.requests r
                         WHERE r.method = p.method AND r.request_id = p.request_id) AS caller
                 FROM artifacts.publications p
                 WHERE method = '{_PUBLICATION}' AND request_id = ANY($1::text[])"""


class Publication:
    """The publication of an `ObjectStore`'s uploads (`uploads.py`), and what each
    request id published."""

    _pool: asyncpg.Pool

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
                      AND NOT {in_closed_location("$3", "$4")}
                    RETURNING create_time""",
                upload.upload_id,
                lease,
                upload.project,
                paths.enclosing(upload.path),
            )
            if begun is None:
                await check_open(conn, upload.project, upload.path)
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
                f"""SELECT {OBJECT_COLUMNS}, request_id, caller FROM artifacts.objects
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
                    RETURNING {OBJECT_COLUMNS}""",
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
            f"""SELECT {OBJECT_COLUMNS}, request_id, caller FROM artifacts.objects
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
        f"""INSERT INTO artifacts.publications (method, request_id, {OBJECT_COLUMNS})
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
        _PUBLICATION,
        key,
        *(getattr(done, field.name) for field in dataclasses.fields(StoredObject)),
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
        raise upload_not_found(upload.upload_id, upload.path)
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
