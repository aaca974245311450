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

from dataclasses import dataclass

import asyncpg

from ..common.errors import NotFound
from ..common.sql import unguarded
from .batch_store import BatchUploads
from .garbage import GarbageKeys
from .listing import LEAST_CHARACTER, Listing, past
from .objects import OBJECT_COLUMNS, StoredObject
from .publication import Publication
from .uploads import Uploads

# The bytes of a removal of up to this many objects are removed within the call; those
# of more, by the janitor beside the calls.
COLLECTED_IN_CALL = 1000


class ObjectStore(Uploads, Publication, BatchUploads, GarbageKeys, Listing):
    """The artifact service's metadata, its parts in their modules: uploads in progress
    (`uploads.py`), their publication (`publication.py`), those of UploadFiles calls
    (`batch_store.py`), garbage keys (`garbage.py`) and listing (`listing.py`); here,
    the objects got and removed."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def exists(self, project: str, path: str) -> bool:
        async with self._pool.acquire() as conn:
            found = await conn.fetchval(
                "SELECT 1 FROM artifacts.objects WHERE project = $1 AND path = $2", project, path
            )
        return found is not None

    async def get(self, project: str, path: str) -> StoredObject:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT {OBJECT_COLUMNS} FROM artifacts.objects WHERE project = $1 AND path = $2",
                project,
                path,
            )
        if row is None:
            raise NotFound("OBJECT_NOT_FOUND", f"no object at {path!r}", metadata={"path": path})
        return StoredObject(**dict(row))

    async def get_many(self, project: str, paths: list[str]) -> dict[str, StoredObject]:
        """The objects at those of paths that hold one, by path."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"""SELECT {OBJECT_COLUMNS} FROM artifacts.objects
                    WHERE project = $1 AND path = ANY($2::text[])""",
                project,
                paths,
            )
        return {row["path"]: StoredObject(**dict(row)) for row in rows}

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
                end = path + LEAST_CHARACTER  # the object at path alone
                return Removed.of(await conn.fetchrow(_REMOVE, project, path, end))
            await unguarded(conn)
            return Removed.of(await conn.fetchrow(_REMOVE, project, path, past(path)))


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
