"""Listing objects in path order, a page at a time: recursively or one level deep."""

from __future__ import annotations

import asyncpg

from ..common import paging
from ..common.sql import Params
from .objects import OBJECT_COLUMNS, StoredObject


class Listing:
    """The listing of an `ObjectStore`'s objects."""

    _pool: asyncpg.Pool

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
        end = past(prefix)
        within = f"AND o.path < {params.add(end)}" if end else ""
        limit = params.add(page_size + 1)
        statement = _list_all(within, limit) if recursive else _list_level(within, limit)
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(statement, *params.values)
        entries: list[StoredObject | str] = [
            prefix + r["entry"]
            if r["entry"].endswith("/")
            else StoredObject(**{k: r[k] for k in OBJECT_COLUMNS.split(", ")})
            for r in rows[:page_size]
        ]
        return paging.ListPage(
            entries, keyset.next_token(rows, page_size), lambda n: keyset.next_token(rows, n)
        )


# Paths hold no NUL: path || LEAST_CHARACTER is the least path after path.
LEAST_CHARACTER = "\x01"


def _start(prefix: str, recursive: bool, last: list[str] | None) -> str:
    """The least path of a listing's page: the prefix itself on the first (an object at
    it comes first, as S3 lists it), else past the last entry, and past a folded
    directory's every object."""
    if last is None:
        return prefix
    entry = prefix + last[0]
    folded = not recursive and entry.endswith("/")
    return (past(entry) if folded else None) or entry + LEAST_CHARACTER


def past(prefix: str) -> str | None:
    """The least string after every string that starts with prefix, in the "C"
    collation's order (code point order, which UTF-8 keeps); None for an empty prefix."""
    kept = prefix.rstrip("\U0010ffff")
    if not kept:
        return None
    following = ord(kept[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:  # surrogates are no characters of a text
        following = 0xE000
    return kept[:-1] + chr(following)


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
