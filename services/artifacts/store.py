"""The record of published objects: what stat and list show, per project."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ..common import paging
from ..common.errors import AlreadyExists, NotFound

_COLUMNS = "project, path, size, sha256, content_type, create_time, update_time"


@dataclass(frozen=True)
class StoredObject:
    project: str
    path: str
    size: int
    sha256: str
    content_type: str
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True)
class Listing:
    objects: list[StoredObject]
    prefixes: list[str]
    next_page_token: str


class ObjectStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def exists(self, project: str, path: str) -> bool:
        async with self._pool.acquire() as conn:
            found = await conn.fetchval(
                "SELECT 1 FROM artifacts.objects WHERE project = $1 AND path = $2", project, path
            )
        return found is not None

    async def record(
        self, project: str, path: str, size: int, sha256: str, content_type: str, overwrite: bool
    ) -> StoredObject:
        """Publishes an object whose bytes are in place."""
        on_conflict = (
            """ON CONFLICT (project, path) DO UPDATE SET size = excluded.size,
                   sha256 = excluded.sha256, content_type = excluded.content_type,
                   update_time = clock_timestamp()"""
            if overwrite
            else ""
        )
        async with self._pool.acquire() as conn:
            try:
                row = await conn.fetchrow(
                    f"""INSERT INTO artifacts.objects (project, path, size, sha256, content_type)
                        VALUES ($1, $2, $3, $4, $5) {on_conflict} RETURNING {_COLUMNS}""",
                    project,
                    path,
                    size,
                    sha256,
                    content_type,
                )
            except asyncpg.UniqueViolationError:
                raise already_exists(path) from None
        return StoredObject(**dict(row))

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

    async def remove(self, project: str, path: str, recursive: bool) -> list[str]:
        """Forgets one object, or every object under a prefix; returns their paths."""
        async with self._pool.acquire() as conn:
            if recursive:
                rows = await conn.fetch(
                    """DELETE FROM artifacts.objects WHERE project = $1 AND path LIKE $2
                       RETURNING path""",
                    project,
                    _like_prefix(path),
                )
            else:
                rows = await conn.fetch(
                    "DELETE FROM artifacts.objects WHERE project = $1 AND path = $2 RETURNING path",
                    project,
                    path,
                )
        return [row["path"] for row in rows]

    async def list(
        self, project: str, prefix: str, recursive: bool, page_size: int, page_token: str
    ) -> Listing:
        """Entries in path order; one level folds deeper paths into "dir/" prefixes."""
        fingerprint = paging.fingerprint("objects", project, prefix, recursive)
        last = paging.decode(page_token, fingerprint)
        after = last[0] if last else ""
        # The part of each path after the prefix, cut after its first "/" for one level.
        entry = (
            "substr(path, $3)"
            if recursive
            else (
                "CASE WHEN strpos(substr(path, $3), '/') > 0 "
                "THEN left(substr(path, $3), strpos(substr(path, $3), '/')) "
                "ELSE substr(path, $3) END"
            )
        )
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"""SELECT DISTINCT ON (entry) entry, {_COLUMNS} FROM (
                        SELECT ({entry}) COLLATE "C" AS entry, * FROM artifacts.objects
                        WHERE project = $1 AND path LIKE $2
                    ) e WHERE entry > $4
                    ORDER BY entry, path LIMIT $5""",
                project,
                _like_prefix(prefix),
                len(prefix) + 1,
                after,
                page_size + 1,
            )
        page = rows[:page_size]
        token = paging.encode(fingerprint, [page[-1]["entry"]]) if len(rows) > page_size else ""
        objects = [
            StoredObject(**{k: r[k] for k in _COLUMNS.split(", ")})
            for r in page
            if not r["entry"].endswith("/")
        ]
        prefixes = [prefix + r["entry"] for r in page if r["entry"].endswith("/")]
        return Listing(objects, prefixes, token)


def already_exists(path: str) -> AlreadyExists:
    return AlreadyExists(
        "OBJECT_ALREADY_EXISTS",
        f"an object exists at {path!r}; upload with overwrite to replace it",
        metadata={"path": path},
    )


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"
