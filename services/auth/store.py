"""Projects, users, project roles and API keys in the `auth` schema."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import asyncpg

from ..common.access import Role, lacks_role
from ..common.config import Config
from ..common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    invalid_field,
)
from ..common.idempotency import request_id_reused
from ..common.paging import Keyset, Page, SortColumn
from ..common.sql import Params
from . import keys

# Live keys (neither revoked nor expired) a user may have: enough for a key per machine,
# job and colleague, and a bound on what one caller makes the others' listings hold.
MAX_LIVE_KEYS = 1000


@dataclass(frozen=True)
class KeyCheck:
    """What authenticating one key for one project needs, in one row."""

    key_hash: bytes
    user_id: str
    global_admin: bool
    expire_time: datetime.datetime | None
    revoke_time: datetime.datetime | None
    role: int | None  # the user's role in the project asked about
    project_exists: bool


@dataclass(frozen=True)
class Project:
    name: str
    description: str
    create_time: datetime.datetime
    caller_role: int | None = None


@dataclass(frozen=True)
class ApiKeyInfo:
    prefix: str
    name: str
    user_id: str
    create_time: datetime.datetime
    expire_time: datetime.datetime | None
    revoke_time: datetime.datetime | None


@dataclass(frozen=True)
class Member:
    project: str
    user_id: str
    role: int


_KEY_CHECK = """
SELECT k.key_hash, k.user_id, u.global_admin, k.expire_time, k.revoke_time, r.role,
       p.name IS NOT NULL AS project_exists
FROM auth.api_keys k
JOIN auth.users u USING (user_id)
LEFT JOIN auth.projects p ON p.name = $2
LEFT JOIN auth.project_roles r ON r.project = $2 AND r.user_id = k.user_id
WHERE k.prefix = $1
"""
_KEY_COLUMNS = "prefix, name, user_id, create_time, expire_time, revoke_time"
_ADD_USER = "INSERT INTO auth.users (user_id) VALUES ($1) ON CONFLICT DO NOTHING"
# No row when another key has the prefix: the caller draws another key.
_INSERT_KEY = f"""
INSERT INTO auth.api_keys
    (prefix, key_hash, user_id, name, expire_time, request_id, request_fingerprint,
     parent_prefix)
VALUES ($1, $2, $3, $4, now() + $5::interval, $6, $7, $8)
ON CONFLICT (prefix) DO NOTHING
RETURNING {_KEY_COLUMNS}
"""
# Prefixes are 48 random bits: with a million keys stored, a new one draws a taken prefix
# once in 280 million, and four in a row never happen but with a broken generator.
_PREFIX_DRAWS = 4
# FOR SHARE: a revocation, which locks the parent FOR UPDATE, waits for this commit.
_LOCK_PARENT = """
SELECT revoke_time, expire_time, now() + $2::interval AS wanted
FROM auth.api_keys WHERE prefix = $1 FOR SHARE
"""
# The key a call with the same request id made before; its request id is forgotten.
# Whether it is still remembered: within the retention of request ids (older ones are
# forgotten everywhere else), this call may repeat it.
_FORGET_REQUEST = """
UPDATE auth.api_keys SET request_id = NULL WHERE user_id = $1 AND request_id = $2
RETURNING prefix, request_fingerprint,
    create_time > now() - $3 * interval '1 second' AS remembered
"""
# Taken by revocations and by creations that name a request id (which may repeat one),
# before any key: each locks keys of trees in an order of its own (a revocation from a
# root down, a repeat its parent, then the earlier key's tree), and two such orders over
# one tree wait for each other. So they take turns; creations are rare.
_TREES_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('auth.api_keys/trees', 0))"
# Whether key $1 is key $2 or was created with it, transitively.
_DESCENDS = """
WITH RECURSIVE up (prefix) AS (
    SELECT $1::text
    UNION ALL
    SELECT k.parent_prefix FROM auth.api_keys k JOIN up USING (prefix)
    WHERE k.parent_prefix IS NOT NULL
)
SELECT $2 IN (SELECT prefix FROM up)
"""
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
_MEMBER_ORDER = [SortColumn("user_id", True, "text", "user_id")]
_PROJECT_ORDER = [SortColumn("p.name", True, "text", "name")]
# What a project takes in an answer beyond its name and description: its time, role,
# and each field's tag and length, with room to spare.
_PROJECT_OVERHEAD = 64
# A key and all keys created with it, transitively, not yet revoked: locked parents
# first, in the order a creation locks them (its parent, then a key its lost answer
# left), so that the two never wait for each other. No cycle can exist: a parent is
# named when its child is inserted, and prefixes never change.
# The walk goes no further than a revoked key: every key below one was revoked with it
# (in its revocation's transaction; migration 0010 for keys of earlier versions), and
# no key is created under one (_admit_parent). Walking through them, a key with 300,000
# revoked keys below it took 0.3 s a revocation, under _TREES_LOCK.
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
_LOCK_TREE = _LIVE_TREE.format(anchor="prefix = $1")
# From the keys created with keys $1, which a pass before this one revoked.
_LOCK_BELOW = _LIVE_TREE.format(anchor="parent_prefix = ANY($1::text[])")


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
    if parent is not None and await conn.fetchval(_DESCENDS, parent, earlier["prefix"]):
        raise Unauthenticated("API_KEY_REVOKED", "the API key has been revoked")
    await _revoke_tree(conn, earlier["prefix"])


async def _check_not_below(conn: asyncpg.Connection, asked_with: str, prefix: str) -> None:
    """Refuses the revocation of key prefix asked with a key created with it, which the
    revocation would take along. A key's parent never changes, so what is read here
    holds until the commit."""
    if await conn.fetchval(_DESCENDS, asked_with, prefix):
        raise FailedPrecondition(
            "REVOKES_CALLING_KEY",
            f"the key making this call was created with {prefix} (or with a key created "
            "with it) and would be revoked with it. To rotate a key, make the new one with "
            "a key outside its tree (ask a global admin: create_user_api_key, or `cairn "
            "keys create --user` on the server), then revoke the old one with the new",
            metadata={"prefix": prefix},
        )


async def _revoke_tree(conn: asyncpg.Connection, prefix: str) -> int:
    """AuthStore.revoke_key's passes, in the caller's transaction."""
    revoked = 0
    tree = [row["prefix"] for row in await conn.fetch(_LOCK_TREE, prefix)]
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


class AuthStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def check_key(self, prefix: str, project: str | None) -> KeyCheck | None:
        row = await self._pool.fetchrow(_KEY_CHECK, prefix, project)
        return None if row is None else KeyCheck(**dict(row))

    async def project_exists(self, name: str) -> bool:
        found = await self._pool.fetchval("SELECT 1 FROM auth.projects WHERE name = $1", name)
        return found is not None

    # Projects.

    async def create_project(self, name: str, description: str) -> Project:
        try:
            row = await self._pool.fetchrow(
                "INSERT INTO auth.projects (name, description) VALUES ($1, $2) "
                "RETURNING name, description, create_time",
                name,
                description,
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(
                "PROJECT_ALREADY_EXISTS", f"project {name!r} already exists"
            ) from None
        return Project(**dict(row))

    async def get_project(self, name: str, user_id: str) -> Project:
        row = await self._pool.fetchrow(
            "SELECT p.name, p.description, p.create_time, r.role AS caller_role "
            "FROM auth.projects p "
            "LEFT JOIN auth.project_roles r ON r.project = p.name AND r.user_id = $2 "
            "WHERE p.name = $1",
            name,
            user_id,
        )
        if row is None:
            raise NotFound("PROJECT_NOT_FOUND", f"project {name!r} not found")
        return Project(**dict(row))

    async def update_project(self, name: str, description: str | None, user_id: str) -> Project:
        """Sets the description (None: unchanged); the project as user_id sees it."""
        if description is not None:
            updated = await self._pool.fetchval(
                "UPDATE auth.projects SET description = $2 WHERE name = $1 RETURNING 1",
                name,
                description,
            )
            if updated is None:
                raise NotFound("PROJECT_NOT_FOUND", f"project {name!r} not found")
        return await self.get_project(name, user_id)

    async def projects(
        self, user_id: str, page_size: int, page_token: str, *, every: bool, budget: int
    ) -> tuple[list[Project], str]:
        """A page of the projects user_id is a member of (of every project when every is
        set), in order of name, as many as an answer holds in budget bytes (one at
        least), and the token of the page after it.

        One statement counts the projects' bytes before it reads their descriptions, so
        that a page of long ones is never read whole only to be cut (1,001 descriptions
        of 40 kB came to 40 MB)."""
        keyset = Keyset(_PROJECT_ORDER, "projects", user_id, every)
        params = Params(user_id, every)
        after = keyset.condition(page_token, params)
        rows = await self._pool.fetch(
            f"""WITH listed AS (
                    SELECT p.name, octet_length(p.name) + octet_length(p.description)
                        + {_PROJECT_OVERHEAD} AS bytes
                    FROM auth.projects p
                    LEFT JOIN auth.project_roles r ON r.project = p.name AND r.user_id = $1
                    WHERE ($2 OR r.role IS NOT NULL) AND {after}
                    ORDER BY p.name LIMIT {page_size + 1}
                ), counted AS (
                    SELECT name, row_number() OVER w AS n, sum(bytes) OVER w AS held
                    FROM listed WINDOW w AS (ORDER BY name ROWS UNBOUNDED PRECEDING)
                )
                SELECT p.name, p.description, p.create_time, r.role AS caller_role,
                    (SELECT count(*) FROM listed) AS listed
                FROM counted c JOIN auth.projects p USING (name)
                LEFT JOIN auth.project_roles r ON r.project = p.name AND r.user_id = $1
                WHERE c.n <= {page_size} AND (c.n = 1 OR c.held <= {params.add(budget)})
                ORDER BY p.name""",
            *params.values,
        )
        projects = [
            Project(row["name"], row["description"], row["create_time"], row["caller_role"])
            for row in rows
        ]
        more = bool(rows) and rows[0]["listed"] > len(rows)
        return projects, keyset.token_after(rows[-1]) if more else ""

    # API keys.

    async def create_key(
        self,
        user_id: str,
        name: str,
        lifetime: datetime.timedelta | None,
        *,
        global_admin: bool = False,
        request_id: str | None = None,
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
        its request id is forgotten, as every write's is, and the key stays."""
        async with self._pool.acquire() as conn, conn.transaction():
            if request_id is not None:
                await conn.execute(_TREES_LOCK)
            if parent is not None:
                admitted = await _admit_parent(conn, parent, lifetime)
            if request_id is not None:
                # Calls repeating one request id at the same time take turns: each
                # revokes the key of the one before, and one usable key is left.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                    f"auth.api_keys/{user_id}/{request_id}",
                )
                earlier = await conn.fetchrow(
                    _FORGET_REQUEST, user_id, request_id, retention_seconds
                )
                if earlier is not None and earlier["remembered"]:
                    await _replace(conn, earlier, request_id, fingerprint, parent)
            if parent is not None:
                # After the repeat's checks: a repeat asked with a key of the tree it
                # revokes, which expires before the key it asks for, is API_KEY_REVOKED.
                _check_outlived_by_parent(admitted)
            await conn.execute(_ADD_USER, user_id)
            await _admit_another_key(conn, user_id)
            if global_admin:
                await conn.execute(
                    "UPDATE auth.users SET global_admin = true WHERE user_id = $1", user_id
                )
            key, row = await _insert_key(
                conn, user_id, name, lifetime, request_id, fingerprint, parent
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
            await conn.execute(_TREES_LOCK)
            if asked_with is not None and asked_with != prefix:
                await _check_not_below(conn, asked_with, prefix)
            return await _revoke_tree(conn, prefix)

    # Project roles.

    async def set_role(self, project: str, user_id: str, role: int, by: str | None = None) -> None:
        """Gives user_id role in project. by: the project admin asking (None: a global
        admin), who must still be its admin when the change takes its turn, and may not
        demote its last admin."""
        async with self._pool.acquire() as conn, conn.transaction():
            await _take_turns(conn, project)
            if by is not None:
                await _still_admin(conn, project, by)
                if role != Role.ADMIN:
                    await _keep_an_admin(conn, project, user_id)
            await conn.execute(_ADD_USER, user_id)
            await conn.execute(
                "INSERT INTO auth.project_roles (project, user_id, role) VALUES ($1, $2, $3) "
                "ON CONFLICT (project, user_id) DO UPDATE SET role = excluded.role",
                project,
                user_id,
                role,
            )

    async def delete_role(self, project: str, user_id: str, by: str | None = None) -> None:
        """Takes user_id's role in project away. by: as set_role's; its last admin's
        role is not taken away."""
        async with self._pool.acquire() as conn, conn.transaction():
            await _take_turns(conn, project)
            if by is not None:
                await _still_admin(conn, project, by)
                await _keep_an_admin(conn, project, user_id)
            deleted = await conn.fetchval(
                "DELETE FROM auth.project_roles WHERE project = $1 AND user_id = $2 RETURNING 1",
                project,
                user_id,
            )
        if deleted is None:
            raise NotFound(
                "PROJECT_ROLE_NOT_FOUND", f"{user_id!r} has no role in project {project!r}"
            )

    async def members(self, project: str, page_size: int, page_token: str) -> Page[Member]:
        """A page of the project's members, in order of user id."""
        keyset = Keyset(_MEMBER_ORDER, "project_members", project)
        params = Params(project)
        after = keyset.condition(page_token, params)
        rows = await self._pool.fetch(
            "SELECT project, user_id, role FROM auth.project_roles "
            f"WHERE project = $1 AND {after} ORDER BY user_id LIMIT {page_size + 1}",
            *params.values,
        )
        return keyset.page(rows, page_size, lambda row: Member(**dict(row)))


async def _take_turns(conn: asyncpg.Connection, project: str) -> None:
    """Makes the changes of project's roles run one after another: each holds the
    project's row until it commits, so the next one sees its change, and none waits for
    a role's row another holds. Locking only the rows a change reads and writes did not
    do: with three admins demoting each other, a change held the admins' rows and waited
    for its target's, which another change held while it waited for an admin's, and
    PostgreSQL aborted one of them (a deadlock). NO KEY UPDATE leaves the key-share locks
    of other tables' foreign keys to the project free."""
    await conn.execute("SELECT 1 FROM auth.projects WHERE name = $1 FOR NO KEY UPDATE", project)


async def _still_admin(conn: asyncpg.Connection, project: str, user_id: str) -> None:
    """Refuses a change of project's roles asked by user_id once user_id is no longer
    its admin, as the gate would now. The gate admitted the call before the change took
    its turn (_take_turns), and a change that took its turn first may have demoted
    user_id since: without this, alice demoting bob while bob made himself admin again
    left bob admin, both calls answering OK."""
    role = await conn.fetchval(
        "SELECT role FROM auth.project_roles WHERE project = $1 AND user_id = $2",
        project,
        user_id,
    )
    if role is None or role < Role.ADMIN:
        raise lacks_role(Role.ADMIN, project)


async def _keep_an_admin(conn: asyncpg.Connection, project: str, user_id: str) -> None:
    """Refuses a change that takes user_id's admin role in project away from its only
    admin. The caller has taken its turn (_take_turns), so the admins read here stay as
    they are until the change commits: two admins taking each other's role at once take
    turns, and the second sees the first's change."""
    admins = await conn.fetch(
        """SELECT user_id FROM auth.project_roles WHERE project = $1 AND role = $2
           ORDER BY user_id""",
        project,
        Role.ADMIN,
    )
    if [row["user_id"] for row in admins] == [user_id]:
        raise FailedPrecondition(
            "LAST_PROJECT_ADMIN",
            f"{user_id!r} is the only admin of project {project!r}: make another member "
            "admin first",
            metadata={"project": project, "user_id": user_id},
        )


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


async def _admit_parent(
    conn: asyncpg.Connection, parent: str, lifetime: datetime.timedelta | None
) -> asyncpg.Record:
    """The parent's row, with the expiry of the key it is asked for ("wanted"); refuses
    any key once the parent is revoked (between the caller's check and now). The
    parent's row stays locked until the commit, so a revocation waits for the new key
    and then revokes it too."""
    row = await conn.fetchrow(_LOCK_PARENT, parent, lifetime)
    if row is None or row["revoke_time"] is not None:
        raise Unauthenticated("API_KEY_REVOKED", "the API key has been revoked")
    return row


async def _insert_key(
    conn: asyncpg.Connection,
    user_id: str,
    name: str,
    lifetime: datetime.timedelta | None,
    request_id: str | None,
    fingerprint: bytes | None,
    parent: str | None,
) -> tuple[str, asyncpg.Record]:
    """A new key and its row; a key whose prefix another has is drawn again. Before, the
    insert broke the prefix's uniqueness and the creation answered INTERNAL."""
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
        )
        if row is not None:
            return key, row
    raise RuntimeError(f"{_PREFIX_DRAWS} keys drawn in a row had prefixes already taken")


def _check_outlived_by_parent(row: asyncpg.Record) -> None:
    """Refuses a key that would expire after the parent that creates it (_admit_parent's
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
