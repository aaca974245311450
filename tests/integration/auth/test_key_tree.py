"""Keys created with keys: revoked with them, whatever runs at the same time."""

from __future__ import annotations

import asyncio
import contextlib
import datetime

import asyncpg
import pytest

from cairn_server.auth.store import AuthStore
from cairn_server.common.errors import Unauthenticated

DAY = datetime.timedelta(days=1)


async def test_keys_created_while_their_parent_is_revoked_are_revoked_or_refused(
    pool: asyncpg.Pool, unique: str
) -> None:
    store = AuthStore(pool)
    user = f"tree-{unique}"
    _, parent = await store.create_key(user, "parent", 30 * DAY)
    _, child = await store.create_key(user, "child", 20 * DAY, parent=parent.prefix)

    async def create(n: int) -> None:
        # Refused when its parent's revocation committed first, as it should be.
        with contextlib.suppress(Unauthenticated):  # under the child: a grandchild
            await store.create_key(user, f"k{n}", DAY, parent=(parent, child)[n % 2].prefix)

    # Started in this order: some creations are under way when the revocation begins.
    await asyncio.gather(
        *(create(n) for n in range(8)),
        store.revoke_key(parent.prefix),
        *(create(n) for n in range(8, 16)),
    )
    left = await pool.fetch(
        "SELECT name FROM auth.api_keys WHERE user_id = $1 AND revoke_time IS NULL", user
    )
    assert left == []


async def test_a_repeated_request_id_revokes_the_earlier_key_with_its_tree(
    pool: asyncpg.Pool, unique: str
) -> None:
    """A creation repeating a request id revokes the key the first call made, taken for
    one nobody got. It revoked that key alone: keys created with it stayed usable, and
    a repeat asked with that very key got a key whose parent was revoked."""
    store = AuthStore(pool)
    user = f"repeat-{unique}"
    _, first = await store.create_key(user, "first", 30 * DAY, request_id="lost-answer")
    _, child = await store.create_key(user, "child", 20 * DAY, parent=first.prefix)
    _, again = await store.create_key(user, "first", 30 * DAY, request_id="lost-answer")
    revoked = await pool.fetch(
        "SELECT prefix FROM auth.api_keys WHERE user_id = $1 AND revoke_time IS NOT NULL", user
    )
    assert {row["prefix"] for row in revoked} == {first.prefix, child.prefix}
    with pytest.raises(Unauthenticated):  # asked with the key its repeat revokes
        await store.create_key(user, "third", DAY, request_id="lost-answer", parent=again.prefix)
    live = await pool.fetch(
        "SELECT prefix FROM auth.api_keys WHERE user_id = $1 AND revoke_time IS NULL", user
    )
    assert [row["prefix"] for row in live] == [again.prefix]
