"""A directory is deleted whole however many objects it holds: its statement is not
subject to the statement timeout (which ended every try at a directory large enough,
so that it could never be deleted), and the bytes of its objects are removed once the
call answered."""

from __future__ import annotations

import asyncpg

import cairn
from cairn_server.artifacts.store import COLLECTED_IN_CALL
from cairn_server.common import database
from cairn_server.common.config import Config
from tests.conftest import eventually, new_project, serving, with_overrides

# Far more than a call's own collection takes, and more than one statement deletes
# within the statement timeout below (about 0.2 s for these here).
OBJECTS = 30 * COLLECTED_IN_CALL
STATEMENT_TIMEOUT_SECONDS = 0.1


async def test_a_directory_of_many_objects_is_deleted_and_its_bytes_removed(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    own_config = with_overrides(
        config,
        db_statement_timeout_seconds=STATEMENT_TIMEOUT_SECONDS,
        artifact_janitor_interval_seconds=0,
    )
    own = await database.create_pool(config.database_url, own_config)
    try:
        async with serving(own_config, own, ["artifacts"]) as port:
            project = await new_project(port, f"big-{unique}")
            async with cairn.ArtifactClient.insecure_connection(
                "127.0.0.1", port, project=project
            ) as store:
                for n in range(2):
                    await store.upload(f"big/real-{n}", b"bytes")
                await store.upload("big-sibling", b"kept")
                stored = await _keys(pool, project, "big/%")
                await _listed_without_bytes(pool, project, unique)

                assert await store.delete("big", recursive=True) == OBJECTS + len(stored)

                assert await store.list("big/", recursive=True) == []
                assert await store.read("big-sibling") == b"kept"

                async def forgotten() -> bool:
                    return not await pool.fetchval(
                        "SELECT count(*) FROM artifacts.garbage WHERE storage_key = ANY($1)",
                        stored,
                    )

                await eventually(forgotten, what="the deleted objects' bytes removed")
    finally:
        await database.close_pool(own)


async def _keys(pool: asyncpg.Pool, project: str, pattern: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT storage_key FROM artifacts.objects WHERE project = $1 AND path LIKE $2",
        project,
        pattern,
    )
    return [row["storage_key"] for row in rows]


async def _listed_without_bytes(pool: asyncpg.Pool, project: str, unique: str) -> None:
    """OBJECTS more objects under big/, recorded only: removing bytes that are not
    there costs next to nothing, which keeps the test quick."""
    await pool.copy_records_to_table(
        "objects",
        schema_name="artifacts",
        columns=["project", "path", "size", "sha256", "content_type", "storage_key"],
        records=[
            (project, f"big/{n:06d}", 1, "0" * 64, "", f"{project}/absent-{unique}-{n}")
            for n in range(OBJECTS)
        ],
    )
