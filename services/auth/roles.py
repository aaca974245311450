"""Project roles: changed one at a time, never taken from a project's last admin."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from ..common.access import Caller, Role, lacks_role
from ..common.errors import FailedPrecondition, NotFound
from ..common.paging import Keyset, Page, SortColumn
from ..common.sql import Params
from .api_keys import ADD_USER, hold_live_key

_MEMBER_ORDER = [SortColumn("user_id", True, "text", "user_id")]


@dataclass(frozen=True)
class Member:
    project: str
    user_id: str
    role: int


class ProjectRoles:
    """The project roles of an `AuthStore`, and the members they make."""

    _pool: asyncpg.Pool

    async def set_role(self, project: str, user_id: str, role: int, asker: Caller) -> None:
        """Gives user_id role in project, as asker asks (_check_asker); a project admin
        may not demote its last admin."""
        async with self._pool.acquire() as conn, conn.transaction():
            await _check_asker(conn, project, asker)
            if not asker.global_admin and role != Role.ADMIN:
                await _keep_an_admin(conn, project, user_id)
            await conn.execute(ADD_USER, user_id)
            await conn.execute(
                "INSERT INTO auth.project_roles (project, user_id, role) VALUES ($1, $2, $3) "
                "ON CONFLICT (project, user_id) DO UPDATE SET role = excluded.role",
                project,
                user_id,
                role,
            )

    async def delete_role(self, project: str, user_id: str, asker: Caller) -> None:
        """Takes user_id's role in project away, as asker asks (_check_asker); a project
        admin may not take its last admin's."""
        async with self._pool.acquire() as conn, conn.transaction():
            await _check_asker(conn, project, asker)
            if not asker.global_admin:
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


async def _check_asker(conn: asyncpg.Connection, project: str, asker: Caller) -> None:
    """Takes the change's turn (_take_turns), then refuses it if asker's key was revoked
    since the gate admitted it (holding the key until the commit: api_keys.hold_live_key)
    or, for a project admin, if asker is no longer its admin (_still_admin). A role
    granted with a key revoked meanwhile, a stolen one say, outlived the revocation
    answered OK."""
    await _take_turns(conn, project)
    if asker.key_prefix:
        await hold_live_key(conn, asker.key_prefix)
    if not asker.global_admin:
        await _still_admin(conn, project, asker.user_id)


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
