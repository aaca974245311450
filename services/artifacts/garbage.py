"""Keys whose bytes are to be removed: condemned, taken by the janitor, postponed, forgotten."""

from __future__ import annotations

import asyncpg


class GarbageKeys:
    """The garbage keys of an `ObjectStore`, which the janitor (`janitor.py`) empties."""

    _pool: asyncpg.Pool

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
