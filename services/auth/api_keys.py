"""Users' API keys: created (a repeat revoking the key its lost answer left), listed, revoked."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import asyncpg

from ..common.config import Config
from ..common.errors import InvalidArgument, Unauthenticated, invalid_field
from ..common.idempotency import RequestId, request_id_reused
from ..common.paging import Keyset, Page, SortColumn
from ..common.sql import Params
from . import keys
from .key_trees import DESCENDS, TREES_LOCK, check_not_below, revoke_tree

# Live keys (neither revoked nor expired) a user may have: enough for a key per machine,
# job and colleague, and a bound on what one caller makes the others' listings hold.
MAX_LIVE_KEYS = 1000


@dataclass(frozen=True)
class ApiKeyInfo:
    prefix: str
    name: str
    user_id: str
    create_time: datetime.datetime
    expire_time: datetime.datetime | None
    revoke_time: datetime.datetime | None


_KEY_COLUMNS = "prefix, name, user_id, create_time, expire_time, revoke_time"
# Made with a user's first key, or first role (roles.py).
ADD_USER = "INSERT INTO auth.users (user_id) VALUES ($1) ON CONFLICT DO NOTHING"
# No row when another key has the prefix: the caller draws another key.
_INSERT_KEY = f"""
INSERT INTO auth.api_keys
    (prefix, key_hash, user_id, name, expire_time, request_id, request_fingerprint,
     parent_prefix, request_caller)
VALUES ($1, $2, $3, $4, now() + $5::interval, $6, $7, $8, $9)
ON CONFLICT (prefix) DO NOTHING
RETURNING {_KEY_COLUMNS}
"""
# Prefixes are 48 random bits: with a million keys stored, a new one draws a taken prefix
# once in 280 million, and four in a row never happen but with a broken generator.
_PREFIX_DRAWS = 4
# FOR SHARE: a revocation, which locks the key FOR UPDATE, waits for this commit.
_LOCK_KEY = """
SELECT revoke_time, expire_time, now() + $2::interval AS wanted
FROM auth.api_keys WHERE prefix = $1 FOR SHARE
"""
# The keys made for a user under a request id's keys (RequestId.keys), and whether each
# is still remembered: within the retention of request ids (older ones are forgotten
# everywhere else), a call may repeat it.
_REQUESTED = """
SELECT prefix, request_id, request_caller AS caller, request_fingerprint,
    create_time > now() - $3 * interval '1 second' AS remembered
FROM auth.api_keys WHERE user_id = $1 AND request_id = ANY($2::text[])
"""
_FORGET_REQUESTS = "UPDATE auth.api_keys SET request_id = NULL WHERE prefix = ANY($1::text[])"
_REVOKED = "SELECT revoke_time IS NOT NULL FROM auth.api_keys WHERE prefix = $1"
# NO KEY UPDATE: creations for one user take turns (it conflicts with itself), while
# writes that only reference the user (a role, a key's foreign key) go on.
_LOCK_USER = "SELECT 1 FROM auth.users WHERE user_id = $1 FOR NO KEY UPDATE"
# Counts no further than the bound: the check costs the same however many keys a user has.
_AT_KEY_BOUND = """
SELECT count(*) >= $2 FROM (
    SELECT 1 FROM auth.api_keys
    WHERE user_id = $1 AND revoke_time IS NULL AND (expire_time IS NULL OR expire_time > now())
    LIMIT $2
) live
"""
_KEY_ORDER = [
    SortColumn("create_time", True, "timestamptz", "create_time"),
    SortColumn("prefix", True, "text", "prefix"),
]


class ApiKeys:
    """The API keys of an `AuthStore`; a key is revoked with every key created with it
    (`key_trees.py`)."""

    _pool: asyncpg.Pool

    async def create_key(
        self,
        user_id: str,
        name: str,
        lifetime: datetime.timedelta | None,
        *,
        global_admin: bool = False,
        request_id: str | None = None,
        sender: str | None = None,
        fingerprint: bytes | None = None,
        parent: str | None = None,
        retention_seconds: float = Config.request_id_retention_seconds,
    ) -> tuple[str, ApiKeyInfo]:
        """A new key for user_id (made a global admin when asked); the key and its row.

        parent is the prefix of the key that asks (None for the command line or with
        authentication off): the new key may not expire after it, and is revoked with it.
        A key made before by a call with the same request id (whose answer was lost, so
        nobody should have its secret) is revoked in the same transaction, with every key
        created with it, as `revoke_key` does: one usable key is left, the one returned
        now. A repeat asked with a key of that tree is refused. A call under that request
        id whose fingerprint (`idempotency.fingerprint_of`) is not the earlier call's is
        another request: REQUEST_ID_REUSED, and the earlier key stays. A key made longer
        ago than retention_seconds (CAIRN_REQUEST_ID_RETENTION_SECONDS) is no repeat's:
        its request id is forgotten, as every write's is, and the key stays. The request
        id is the sender's (`idempotency.user_of` the caller; None for one space, with
        authentication off): another user's key made under the same id, for the same
        user, is not this call's to repeat or to refuse it for."""
        async with self._pool.acquire() as conn, conn.transaction():
            if request_id is not None:
                await conn.execute(TREES_LOCK)
            if parent is not None:
                admitted = await hold_live_key(conn, parent, lifetime)
            stored = None
            if request_id is not None:
                # Calls repeating one request id at the same time take turns: each
                # revokes the key of the one before, and one usable key is left.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                    f"auth.api_keys/{user_id}/{request_id}",
                )
                claimed = RequestId(request_id, sender)
                stored = await _claim(
                    conn, user_id, claimed, fingerprint, parent, retention_seconds
                )
            if parent is not None:
                # After the repeat's checks: a repeat asked with a key of the tree it
                # revokes, which expires before the key it asks for, is API_KEY_REVOKED.
                _check_outlived_by_parent(admitted)
            await conn.execute(ADD_USER, user_id)
            await _admit_another_key(conn, user_id)
            if global_admin:
                await conn.execute(
                    "UPDATE auth.users SET global_admin = true WHERE user_id = $1", user_id
                )
            key, row = await _insert_key(
                conn, user_id, name, lifetime, fingerprint, parent, stored, sender
            )
        return key, ApiKeyInfo(**dict(row))

    async def keys_of(self, user_id: str, page_size: int, page_token: str) -> Page[ApiKeyInfo]:
        """A page of user_id's keys, revoked and expired ones too, in order of creation."""
        keyset = Keyset(_KEY_ORDER, "api_keys", user_id)
        params = Params(user_id)
        last = keyset.last(page_token)
        after = "TRUE"
        if last is not None:
            # The keyset's OR of comparisons is no range of the index; its first column's
            # bound is, so a page starts where the one before ended.
            since = params.add(last[0], "timestamptz")
            after = f"create_time >= {since} AND {keyset.after(last, params)}"
        rows = await self._pool.fetch(
            f"SELECT {_KEY_COLUMNS} FROM auth.api_keys WHERE user_id = $1 AND {after} "
            f"ORDER BY create_time, prefix LIMIT {page_size + 1}",
            *params.values,
        )
        return keyset.page(rows, page_size, lambda row: ApiKeyInfo(**dict(row)))

    async def key_owner(self, prefix: str, key: str | None = None) -> str | None:
        """The user of the key with this prefix; None when no key has it, or when key,
        the whole key given, is not that key (its secret differs)."""
        row = await self._pool.fetchrow(
            "SELECT user_id, key_hash FROM auth.api_keys WHERE prefix = $1", prefix
        )
        if row is None or (key is not None and not keys.matches(key, bytes(row["key_hash"]))):
            return None
        return str(row["user_id"])

    async def revoke_key(self, prefix: str, asked_with: str | None = None) -> int:
        """Revokes a key and every key created with it, transitively, in one transaction;
        returns how many were newly revoked. A revoked key keeps its first revocation time.

        asked_with is the prefix of the key the revocation is asked with (None with
        authentication off). Asked with a key below the revoked one, it is refused: it
        would revoke that key too and answer OK, its owner (a global admin too) locked
        out. Asked with the revoked key itself, it goes on, as its owner asks.

        Each pass sees what committed before it began (READ COMMITTED): a key created
        with a key of the tree while a pass ran shows up in the next one, and a creation
        that begins after a pass locked its parent waits for this commit and is refused.
        So the passes go on until one finds nothing left to revoke.

        A key revoked before answers at once, without waiting for the revocations under
        way: its tree was revoked with it."""
        async with self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(_REVOKED, prefix):
                return 0
            await conn.execute(TREES_LOCK)
            if asked_with is not None and asked_with != prefix:
                await check_not_below(conn, asked_with, prefix)
            return await revoke_tree(conn, prefix)


async def _claim(
    conn: asyncpg.Connection,
    user_id: str,
    claimed: RequestId,
    fingerprint: bytes | None,
    parent: str | None,
    retention_seconds: float,
) -> str:
    """The request id a new key for user_id is stored under: as sent, where servers of
    the release before look for it too, unless another sender's key holds it; then the
    sender's own key (RequestId.own_key, which no id sent can spell). The keys of the
    call this one repeats (_repeats) are revoked while remembered; their request ids are
    forgotten, as is every one no longer remembered."""
    rows = await conn.fetch(_REQUESTED, user_id, claimed.keys, retention_seconds)
    earlier = [row for row in rows if _repeats(claimed, row)]
    for row in earlier:
        if row["remembered"]:
            await _replace(conn, row, claimed.sent, fingerprint, parent)
    forgotten = [row for row in rows if row in earlier or not row["remembered"]]
    await conn.execute(_FORGET_REQUESTS, [row["prefix"] for row in forgotten])
    held = {row["request_id"] for row in rows if row not in forgotten}
    if claimed.sent not in held or claimed.own_key is None:
        return claimed.sent
    return claimed.own_key


def _repeats(claimed: RequestId, row: asyncpg.Record) -> bool:
    """Whether the key of row (stored under one of claimed's keys) is of a call this one
    may repeat: under the sender's own key, or under the id as sent by the sender or by
    one unknown (a server of the release before kept none; with authentication off, the
    ids are one space)."""
    if row["request_id"] == claimed.own_key:
        return True
    return claimed.user is None or row["caller"] in (None, claimed.user)


async def _replace(
    conn: asyncpg.Connection,
    earlier: asyncpg.Record,
    request_id: str,
    fingerprint: bytes | None,
    parent: str | None,
) -> None:
    """Revokes the key an earlier call under request_id made (with its tree), when this
    call repeats it; in the caller's transaction, which a refusal rolls back."""
    made = earlier["request_fingerprint"]
    if made is not None and fingerprint is not None and made != fingerprint:
        raise request_id_reused(request_id)
    if parent is not None and await conn.fetchval(DESCENDS, parent, earlier["prefix"]):
        raise Unauthenticated("API_KEY_REVOKED", "the API key has been revoked")
    await revoke_tree(conn, earlier["prefix"])


async def _admit_another_key(conn: asyncpg.Connection, user_id: str) -> None:
    """Refuses a key past MAX_LIVE_KEYS for user_id.

    The count is a statement of its own after the lock: under READ COMMITTED a statement
    sees what committed before it began, so a count in the locking statement would miss
    the key of the creation it waited for, and two at the bound would both pass."""
    await conn.execute(_LOCK_USER, user_id)
    if await conn.fetchval(_AT_KEY_BOUND, user_id, MAX_LIVE_KEYS):
        raise InvalidArgument(
            "TOO_MANY_API_KEYS",
            f"{user_id!r} already has {MAX_LIVE_KEYS} API keys that are neither revoked "
            "nor expired, as many as a user may: revoke one first",
            metadata={"limit": str(MAX_LIVE_KEYS)},
        )


async def hold_live_key(
    conn: asyncpg.Connection, prefix: str, lifetime: datetime.timedelta | None = None
) -> asyncpg.Record:
    """The row of the key a call was asked with, with the expiry of a key of lifetime
    made with it ("wanted"); refuses the call once the key is revoked (between the
    gate's check and now). The row stays locked until the commit, so a revocation waits
    for what the call grants (a key made with it, which it then revokes too; a role)
    and a revocation answered OK holds."""
    row = await conn.fetchrow(_LOCK_KEY, prefix, lifetime)
    if row is None or row["revoke_time"] is not None:
        raise Unauthenticated("API_KEY_REVOKED", "the API key has been revoked")
    return row


async def _insert_key(
    conn: asyncpg.Connection,
    user_id: str,
    name: str,
    lifetime: datetime.timedelta | None,
    fingerprint: bytes | None,
    parent: str | None,
    request_id: str | None,
    sender: str | None,
) -> tuple[str, asyncpg.Record]:
    """A new key and its row (request_id: the one it is stored under); a key whose prefix
    another has is drawn again. Before, the insert broke the prefix's uniqueness and the
    creation answered INTERNAL."""
    for _ in range(_PREFIX_DRAWS):
        key, prefix = keys.generate()
        row = await conn.fetchrow(
            _INSERT_KEY,
            prefix,
            keys.digest(key),
            user_id,
            name,
            lifetime,
            request_id,
            fingerprint,
            parent,
            sender,
        )
        if row is not None:
            return key, row
    raise RuntimeError(f"{_PREFIX_DRAWS} keys drawn in a row had prefixes already taken")


def _check_outlived_by_parent(row: asyncpg.Record) -> None:
    """Refuses a key that would expire after the parent that creates it (hold_live_key's
    row)."""
    parent_expiry, wanted = row["expire_time"], row["wanted"]
    if parent_expiry is not None and (wanted is None or wanted > parent_expiry):
        raise invalid_field(
            "expiration",
            f"a key cannot outlive the key that creates it, which expires at "
            f"{parent_expiry.isoformat(timespec='seconds')}: choose a shorter expiration, "
            "or create the key with a longer-lived one",
            "API_KEY_OUTLIVES_PARENT",
        )
