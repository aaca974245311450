"""A server with CAIRN_AUTH=api_key, and callers of every kind for its tests.

The callers: a global admin; a viewer, an editor and an admin of one project; an
editor and an admin of another project; and keys that must fail (expired, revoked).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
import pytest_asyncio

import cairn
from cairn.types import ApiKeyExpirationTime, ProjectRole
from cairn_server import catalog
from cairn_server.auth.store import AuthStore
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer
from tests.conftest import with_overrides


@dataclass(frozen=True)
class World:
    """A project with members, another project with one, and a key for each caller."""

    port: int
    project: str
    other_project: str
    keys: dict[str, str]
    users: dict[str, str]  # the user id of each caller

    def auth(self, who: str) -> cairn.AuthClient:
        return self.auth_with(self.keys[who])

    def auth_with(self, key: str) -> cairn.AuthClient:
        return cairn.AuthClient.insecure_connection("127.0.0.1", self.port, key)

    def tracking(self, who: str, project: str | None = None) -> cairn.TrackingClient:
        return self.tracking_with(self.keys[who], project)

    def tracking_with(self, key: str, project: str | None = None) -> cairn.TrackingClient:
        return cairn.TrackingClient.insecure_connection(
            "127.0.0.1", self.port, key, project=project or self.project
        )


async def serve(config: Config, pool: asyncpg.Pool) -> tuple[CairnServer, int]:
    server = CairnServer(config, catalog.select([]), pool)
    return server, await server.start()


@pytest_asyncio.fixture(scope="module")
async def guarded(config: Config, pool: asyncpg.Pool) -> AsyncIterator[int]:
    """All services with API keys required; failures are not rate limited here (the
    table-driven test makes hundreds on purpose; rate limiting has its own server)."""
    server, port = await serve(
        with_overrides(config, auth="api_key", auth_failure_limit=10**6), pool
    )
    yield port
    await server.stop(grace=0)


@pytest.fixture
async def world(guarded: int, pool: asyncpg.Pool, unique: str) -> World:
    return await populated(guarded, pool, unique)


async def populated(guarded: int, pool: asyncpg.Pool, unique: str) -> World:
    """Two projects on the server at port guarded, and a key of each role in them."""
    store = AuthStore(pool)
    root, _ = await store.create_key(f"root-{unique}", "root", None, global_admin=True)
    keys = {"global_admin": root}
    users = {"global_admin": f"root-{unique}"}
    project, other = f"acl-{unique}", f"acl-other-{unique}"
    async with cairn.AuthClient.insecure_connection("127.0.0.1", guarded, root) as admin:
        await admin.create_project(project, "where the roles are")
        await admin.create_project(other)
        for who, where, role in (
            ("viewer", project, ProjectRole.VIEWER),
            ("editor", project, ProjectRole.EDITOR),
            ("admin", project, ProjectRole.ADMIN),
            ("outsider", other, ProjectRole.EDITOR),
            ("other_admin", other, ProjectRole.ADMIN),
            ("expired", project, ProjectRole.ADMIN),
            ("revoked", project, ProjectRole.ADMIN),
        ):
            user = users[who] = f"{who}-{unique}"
            await admin.add_user_project_role(user, where, role)
            keys[who] = await admin.create_user_api_key(user, who, ApiKeyExpirationTime.ONE_YEAR)
        await admin.delete_api_key(keys["revoked"])
    await pool.execute(
        "UPDATE auth.api_keys SET expire_time = now() - interval '1 second' WHERE prefix = $1",
        keys["expired"].split("_")[1],
    )
    return World(guarded, project, other, keys, users)
