"""Projects, users, project roles and API keys in the `auth` schema."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import asyncpg

from .api_keys import ApiKeys
from .projects import Projects
from .roles import ProjectRoles


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


_KEY_CHECK = """
SELECT k.key_hash, k.user_id, u.global_admin, k.expire_time, k.revoke_time, r.role,
       p.name IS NOT NULL AS project_exists
FROM auth.api_keys k
JOIN auth.users u USING (user_id)
LEFT JOIN auth.projects p ON p.name = $2
LEFT JOIN auth.project_roles r ON r.project = $2 AND r.user_id = k.user_id
WHERE k.prefix = $1
"""


class AuthStore(Projects, ApiKeys, ProjectRoles):
    """The auth service's records, their parts in their modules: projects (`projects.py`),
    users' API keys (`api_keys.py`, their trees in `key_trees.py`) and project roles
    (`roles.py`); here, the check of a key for a project, in one statement."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def check_key(self, prefix: str, project: str | None) -> KeyCheck | None:
        row = await self._pool.fetchrow(_KEY_CHECK, prefix, project)
        return None if row is None else KeyCheck(**dict(row))

    async def project_exists(self, name: str) -> bool:
        found = await self._pool.fetchval("SELECT 1 FROM auth.projects WHERE name = $1", name)
        return found is not None
