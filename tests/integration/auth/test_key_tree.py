"""Keys created with keys: revoked with them, whatever runs at the same time."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
from typing import Any

import asyncpg
import pytest

from cairn.exceptions import FailedPreconditionError
from cairn.types import ApiKeyExpirationTime
from cairn_server.auth import SPEC, key_trees
from cairn_server.auth.store import AuthStore
from cairn_server.common import migrations
from cairn_server.common.errors import Unauthenticated
from tests.conftest import another_transaction, eventually, holds_up_another
from tests.integration.auth.conftest import World

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


async def test_a_revocation_walks_the_live_keys_of_a_tree_alone(
    pool: asyncpg.Pool, unique: str
) -> None:
    """A revoked key's keys are revoked with it, so a walk of a tree stops at revoked
    keys. It went down through them and kept the live ones at the end: under one
    deployment-wide lock, revoking a key with 300,000 revoked keys below it took 0.3 s
    every time, and other users' key creations waited for it."""
    store = AuthStore(pool)
    user = f"walk-{unique}"
    _, root = await store.create_key(user, "root", 30 * DAY)
    await store.create_key(user, "live", 20 * DAY, parent=root.prefix)
    _, gone = await store.create_key(user, "gone", 20 * DAY, parent=root.prefix)
    for n in range(100):
        await store.create_key(user, f"below-{n}", DAY, parent=gone.prefix)
    assert await store.revoke_key(gone.prefix) == 101
    async with another_transaction(pool) as conn:
        plan = json.loads(
            await conn.fetchval(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {key_trees.LOCK_TREE}", root.prefix
            )
        )
    assert _rows_of(plan[0]["Plan"], "Recursive Union") == [2]  # root and live


async def test_revoking_a_revoked_key_waits_for_no_other_revocation(
    pool: asyncpg.Pool, unique: str
) -> None:
    """Revocations take turns; one of a key revoked before has nothing to do, and
    answers at once instead of taking its turn behind the others."""
    store = AuthStore(pool)
    user = f"again-{unique}"
    _, revoked = await store.create_key(user, "revoked", None)
    await store.revoke_key(revoked.prefix)
    _, busy = await store.create_key(user, "busy", None)
    async with another_transaction(pool) as creation:  # one under busy, half done
        await creation.execute(
            "SELECT 1 FROM auth.api_keys WHERE prefix = $1 FOR SHARE", busy.prefix
        )
        waiting = asyncio.create_task(store.revoke_key(busy.prefix))
        await eventually(lambda: holds_up_another(creation), what="a revocation waiting")
        again = asyncio.create_task(store.revoke_key(revoked.prefix))
        await eventually(again.done, what="the revoked key's revocation answering")
        assert again.result() == 0
    assert await waiting == 1


async def test_a_revocation_reaches_every_live_key_of_the_tree(
    pool: asyncpg.Pool, unique: str
) -> None:
    """Live keys below live keys, beside revoked ones, and one created with a key of the
    tree while the revocation waits for that key: all of them are revoked."""
    store = AuthStore(pool)
    user = f"reach-{unique}"
    _, root = await store.create_key(user, "root", 30 * DAY)
    parent = root
    for depth in range(3):
        _, parent = await store.create_key(
            user, f"live-{depth}", (20 - depth) * DAY, parent=parent.prefix
        )
        _, beside = await store.create_key(user, f"gone-{depth}", DAY, parent=parent.prefix)
        await store.revoke_key(beside.prefix)
    async with another_transaction(pool) as holder:  # the creation's turn for the user
        await holder.execute("SELECT 1 FROM auth.users WHERE user_id = $1 FOR UPDATE", user)
        waiting = await _lock_waits(pool)
        creating = asyncio.create_task(store.create_key(user, "late", DAY, parent=parent.prefix))
        await eventually(lambda: holds_up_another(holder), what="the creation waiting")
        revoking = asyncio.create_task(store.revoke_key(root.prefix))
        # It waits for the creation, which holds the parent the revocation goes on to.
        await eventually(lambda: _lock_waits(pool, more_than=waiting + 1), what="both wait")
    await creating  # made, not refused: it went first
    assert await revoking == 5  # the root, three live keys and the late one
    live = await pool.fetch(
        "SELECT name FROM auth.api_keys WHERE user_id = $1 AND revoke_time IS NULL", user
    )
    assert live == []


async def test_keys_an_earlier_version_left_live_below_revoked_keys_are_revoked(
    pool: asyncpg.Pool, unique: str
) -> None:
    """A revocation no longer walks through revoked keys, so a key left live below one
    (a repeated creation once revoked the earlier key alone) is revoked on upgrade."""
    schema = f"auth_{unique}"
    steps = migrations.discover(SPEC.migrations_dir)
    before = [step for step in steps if step.name < "0010"]
    rows = [  # prefix, parent, revoked
        ("gone", None, True),
        ("left", "gone", False),
        ("below", "left", False),
        ("kept", None, False),
        ("under", "kept", False),
    ]
    async with pool.acquire() as conn:
        await migrations.apply(conn, schema, before)
        await conn.execute(f"INSERT INTO {schema}.users (user_id) VALUES ('u')")
        for prefix, parent, revoked in rows:
            await conn.execute(
                f"""INSERT INTO {schema}.api_keys
                    (prefix, key_hash, user_id, name, parent_prefix, revoke_time)
                    VALUES ($1, '', 'u', $1, $2, CASE WHEN $3 THEN now() END)""",
                prefix,
                parent,
                revoked,
            )
        await migrations.apply(conn, schema, steps)
        live = await conn.fetch(
            f"SELECT prefix FROM {schema}.api_keys WHERE revoke_time IS NULL ORDER BY prefix"
        )
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    assert [row["prefix"] for row in live] == ["kept", "under"]


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


async def test_a_repeat_asked_with_a_key_it_revokes_is_refused_as_revoked(
    pool: asyncpg.Pool, unique: str
) -> None:
    """A true repeat asks for the lifetime the earlier key got, so asked with that key
    (or one made with it, which expires sooner) it outlived its parent: it was refused
    INVALID_ARGUMENT API_KEY_OUTLIVES_PARENT, "choose a shorter expiration", and never
    reached the API_KEY_REVOKED docs/auth.md says."""
    store = AuthStore(pool)
    user = f"asked-{unique}"
    _, root = await store.create_key(user, "root", 365 * DAY)
    _, earlier = await store.create_key(
        user, "made", 90 * DAY, request_id="lost-answer", parent=root.prefix
    )
    _, below = await store.create_key(user, "below", 30 * DAY, parent=earlier.prefix)
    for asking in (earlier, below):
        with pytest.raises(Unauthenticated) as refused:
            await store.create_key(
                user, "made", 90 * DAY, request_id="lost-answer", parent=asking.prefix
            )
        assert refused.value.reason == "API_KEY_REVOKED"


async def test_a_repeated_creation_and_its_parents_revocation_do_not_deadlock(
    pool: asyncpg.Pool, unique: str
) -> None:
    """The repeat locked the earlier key's tree before the parent, the reverse of a
    revocation of the parent: each waited for the other (ABORTED after a second, and
    the parent left usable). A key of the tree, held meanwhile, makes the race sure."""
    store = AuthStore(pool)
    user = f"order-{unique}"
    _, parent = await store.create_key(user, "parent", 30 * DAY)
    _, earlier = await store.create_key(
        user, "earlier", 2 * DAY, request_id="lost-answer", parent=parent.prefix
    )
    _, below = await store.create_key(user, "below", DAY, parent=earlier.prefix)
    hold = ("SELECT 1 FROM auth.api_keys WHERE prefix = $1 FOR NO KEY UPDATE", below.prefix)
    await _repeat_then_revoke(pool, user, hold, parent.prefix, parent.prefix)


async def test_a_repeat_and_a_revocation_of_a_root_above_both_its_keys_do_not_deadlock(
    pool: asyncpg.Pool, unique: str
) -> None:
    """A revocation locks a tree from its root down, by depth; the repeat locked its
    parent, then the earlier key. Under one root, with the earlier key above the parent,
    each held what the other waited for."""
    store = AuthStore(pool)
    user = f"deep-{unique}"
    _, root = await store.create_key(user, "root", 30 * DAY)
    parent = root
    for depth in range(3):  # the repeat's parent, three keys below the root
        _, parent = await store.create_key(
            user, f"p{depth}", (20 - depth) * DAY, parent=parent.prefix
        )
    _, side = await store.create_key(user, "side", 20 * DAY, parent=root.prefix)
    await store.create_key(user, "earlier", 2 * DAY, request_id="lost-answer", parent=side.prefix)
    hold = (  # holds the repeat once it has its parent
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        f"auth.api_keys/{user}/lost-answer",
    )
    await _repeat_then_revoke(pool, user, hold, parent.prefix, root.prefix)


async def test_two_repeats_each_asked_with_a_key_the_other_revokes_do_not_deadlock(
    pool: asyncpg.Pool, unique: str
) -> None:
    """Repeats of two request ids, each asked with a key made with the other's earlier
    key: each locked its parent, then the other's tree. They take turns now; the second
    finds its parent revoked by the first."""
    store = AuthStore(pool)
    user = f"cross-{unique}"
    _, root = await store.create_key(user, "root", 30 * DAY)
    _, first = await store.create_key(user, "e1", 20 * DAY, request_id="r1", parent=root.prefix)
    _, second = await store.create_key(user, "e2", 20 * DAY, request_id="r2", parent=root.prefix)
    _, under_first = await store.create_key(user, "p2", 10 * DAY, parent=first.prefix)
    _, under_second = await store.create_key(user, "p1", 10 * DAY, parent=second.prefix)
    async with pool.acquire() as blocker, blocker.transaction():
        for request_id in ("r1", "r2"):  # holds each repeat once it has its parent
            await blocker.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                f"auth.api_keys/{user}/{request_id}",
            )
        waiting = await _lock_waits(pool)
        repeats = [
            asyncio.create_task(
                store.create_key(user, "e1", DAY, request_id="r1", parent=under_second.prefix)
            ),
            asyncio.create_task(
                store.create_key(user, "e2", DAY, request_id="r2", parent=under_first.prefix)
            ),
        ]
        await eventually(lambda: _lock_waits(pool, more_than=waiting + 1), what="both wait")
    outcomes = await asyncio.gather(*repeats, return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(refused) == 1 and isinstance(refused[0], Unauthenticated), outcomes


async def test_a_key_revoking_a_key_it_was_made_with_is_refused(world: World, unique: str) -> None:
    """Rotating a key as ML cube's users do, a new key made with the old one and then the
    old one revoked with the new, answered OK and revoked the new key with the old: each
    call after it, a global admin's too, was UNAUTHENTICATED API_KEY_REVOKED."""
    user = f"rotating-{unique}"
    async with world.auth("global_admin") as admin:
        old = await admin.create_user_api_key(user, "old", ApiKeyExpirationTime.ONE_YEAR)
        own_new = await admin.create_api_key("new", ApiKeyExpirationTime.THIRTY_DAYS)
    async with world.auth_with(old) as with_old:
        new = await with_old.create_api_key("new", ApiKeyExpirationTime.THIRTY_DAYS)
    for asking, revoked in ((new, old), (own_new, world.keys["global_admin"])):
        async with world.auth_with(asking) as with_new:
            with pytest.raises(FailedPreconditionError) as refused:
                await with_new.delete_api_key(revoked)
            assert refused.value.reason == "REVOKES_CALLING_KEY"
            assert "global admin" in refused.value.message
            assert not any(key.revoked for key in await with_new.get_api_keys())
    async with world.auth("global_admin") as admin:  # the rotation docs/auth.md shows
        made_by_admin = await admin.create_user_api_key(
            user, "rotated", ApiKeyExpirationTime.THIRTY_DAYS
        )
    async with world.auth_with(made_by_admin) as rotated:
        await rotated.delete_api_key(old)  # made with another key: allowed
        assert [k.name for k in await rotated.get_api_keys() if not k.revoked] == ["rotated"]
    async with world.auth_with(own_new) as with_own_new:
        await with_own_new.delete_api_key(own_new)  # itself, as docs/auth.md allows


async def _repeat_then_revoke(
    pool: asyncpg.Pool, user: str, hold: tuple[str, str], parent: str, revoked: str
) -> None:
    """While a session holds what hold locks: a repeat of "lost-answer" under parent,
    then, once it waits, the revocation of revoked. Neither may abort, and none of the
    user's keys stays usable."""
    store = AuthStore(pool)
    async with pool.acquire() as blocker, blocker.transaction():
        await blocker.execute(*hold)
        waiting = await _lock_waits(pool)
        repeat = asyncio.create_task(
            store.create_key(user, "earlier", DAY, request_id="lost-answer", parent=parent)
        )
        await eventually(lambda: _lock_waits(pool, more_than=waiting), what="the repeat waits")
        revoking = asyncio.create_task(store.revoke_key(revoked))
        await eventually(lambda: _lock_waits(pool, more_than=waiting + 1), what="both wait")
    await asyncio.gather(repeat, revoking)  # neither aborted
    live = await pool.fetchval(
        "SELECT count(*) FROM auth.api_keys WHERE user_id = $1 AND revoke_time IS NULL", user
    )
    assert live == 0


async def _lock_waits(pool: asyncpg.Pool, more_than: int | None = None) -> Any:
    """How many sessions of this database wait for a lock (or whether more than so many
    do)."""
    count = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database()"
    )
    return count if more_than is None else count > more_than


def _rows_of(plan: dict[str, Any], node_type: str) -> list[int]:
    """The rows each node of node_type in an EXPLAIN ANALYZE plan gave."""
    found = [plan["Actual Rows"]] if plan["Node Type"] == node_type else []
    for child in plan.get("Plans", []):
        found += _rows_of(child, node_type)
    return found
