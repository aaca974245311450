"""Projects: created, read, described anew and listed by name, each with the caller's role."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import asyncpg

from ..common.errors import AlreadyExists, NotFound
from ..common.paging import Keyset, SortColumn
from ..common.sql import Params

_PROJECT_ORDER = [SortColumn("p.name", True, "text", "name")]
# What a project takes in an answer beyond its name and description: its time, role,
# and each field's tag and length, with room to spare.
_PROJECT_OVERHEAD = 64


@dataclass(frozen=True)
class Project:
    name: str
    description: str
    create_time: datetime.datetime
    caller_role: int | None = None


class Projects:
    """The projects of an `AuthStore`."""

    _pool: asyncpg.Pool

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
