"""Trees of API keys: a key and every key created with it, locked and revoked together."""

from __future__ import annotations

import asyncpg

from ..common.errors import FailedPrecondition

# Taken by revocations and by creations that name a request id (which may repeat one),
# before any key: each locks keys of trees in an order of its own (a revocation from a
# root down, a repeat its parent, then the earlier key's tree), and two such orders over
# one tree wait for each other. So they take turns; creations are rare.
TREES_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('auth.api_keys/trees', 0))"
# Whether key $1 is key $2 or was created with it, transitively.
DESCENDS = """
WITH RECURSIVE up (prefix) AS (
    SELECT $1::text
    UNION ALL
    SELECT k.parent_prefix FROM auth.api_keys k JOIN up USING (prefix)
    WHERE k.parent_prefix IS NOT NULL
)
SELECT $2 IN (SELECT prefix FROM up)
"""
# A key and all keys created with it, transitively, not yet revoked: locked parents
# first, in the order a creation locks them (its parent, then a key its lost answer
# left), so that the two never wait for each other. No cycle can exist: a parent is
# named when its child is inserted, and prefixes never change.
# The walk goes no further than a revoked key: every key below one was revoked with it
# (in its revocation's transaction; migration 0010 for keys of earlier versions), and
# no key is created under one (api_keys.hold_live_key). Walking through them, a key
# with 300,000 revoked keys below it took 0.3 s a revocation, under TREES_LOCK.
_LIVE_TREE = """
WITH RECURSIVE tree (prefix, depth) AS (
    SELECT prefix, 0 FROM auth.api_keys WHERE {anchor} AND revoke_time IS NULL
    UNION ALL
    SELECT k.prefix, t.depth + 1 FROM auth.api_keys k JOIN tree t ON k.parent_prefix = t.prefix
    WHERE k.revoke_time IS NULL
)
SELECT k.prefix FROM tree JOIN auth.api_keys k USING (prefix)
WHERE k.revoke_time IS NULL
ORDER BY tree.depth, k.prefix
FOR UPDATE OF k
"""
# From key $1 (nothing when it is revoked).
LOCK_TREE = _LIVE_TREE.format(anchor="prefix = $1")
# From the keys created with keys $1, which a pass before this one revoked.
_LOCK_BELOW = _LIVE_TREE.format(anchor="parent_prefix = ANY($1::text[])")


async def check_not_below(conn: asyncpg.Connection, asked_with: str, prefix: str) -> None:
    """Refuses the revocation of key prefix asked with a key created with it, which the
    revocation would take along. A key's parent never changes, so what is read here
    holds until the commit."""
    if await conn.fetchval(DESCENDS, asked_with, prefix):
        raise FailedPrecondition(
            "REVOKES_CALLING_KEY",
            f"the key making this call was created with {prefix} (or with a key created "
            "with it) and would be revoked with it. To rotate a key, make the new one with "
            "a key outside its tree (ask a global admin: create_user_api_key, or `cairn "
            "keys create --user` on the server), then revoke the old one with the new",
            metadata={"prefix": prefix},
        )


async def revoke_tree(conn: asyncpg.Connection, prefix: str) -> int:
    """AuthStore.revoke_key's passes, in the caller's transaction."""
    revoked = 0
    tree = [row["prefix"] for row in await conn.fetch(LOCK_TREE, prefix)]
    while tree:
        await conn.execute(
            "UPDATE auth.api_keys SET revoke_time = now() WHERE prefix = ANY($1)", tree
        )
        revoked += len(tree)
        # A key created with one of these after this pass began committed before the
        # pass locked its parent (a later one is refused), so the next pass sees it.
        # It lies below this pass's keys, which the walk no longer goes through.
        tree = [row["prefix"] for row in await conn.fetch(_LOCK_BELOW, tree)]
    return revoked
