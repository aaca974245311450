"""Objects stored before every upload had a key of its own ("<project>/<path>") keep
working after the migration, and what the old layout left behind is cleaned up."""

import asyncio
import hashlib
from datetime import timedelta
from pathlib import Path

import pgserver

import cairn
from cairn_server import catalog
from cairn_server.artifacts import SPEC as ARTIFACTS
from cairn_server.artifacts import backends
from cairn_server.artifacts.janitor import Janitor
from cairn_server.artifacts.store import ObjectStore
from cairn_server.common import database, migrations
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer, migrate
from tests.conftest import eventually, with_overrides

OLD = b"stored under its path"


async def _database_of_the_old_layout(url: str, root: Path) -> None:
    """The artifact schema as its first migration left it, with one object in it."""
    pool = await database.create_pool(url, Config(database_url=url))
    first = migrations.discover(ARTIFACTS.migrations_dir)[:1]
    async with pool.acquire() as conn:
        await migrations.apply(conn, "artifacts", first)
        await conn.execute(
            """INSERT INTO artifacts.objects (project, path, size, sha256, content_type)
               VALUES ('default', 'models/old.bin', $1, $2, 'application/octet-stream')""",
            len(OLD),
            hashlib.sha256(OLD).hexdigest(),
        )
    await database.close_pool(pool)
    (root / "default" / "models").mkdir(parents=True)
    (root / "default" / "models" / "old.bin").write_bytes(OLD)
    # What a crashed upload of the old layout left beside its target.
    (root / "default" / "models" / ".upload-0123456789abcdef").write_bytes(b"litter")


async def test_objects_of_the_old_layout_are_served_replaced_and_swept(
    config: Config, tmp_path: Path
) -> None:
    postgres = pgserver.get_server(tmp_path / "pg", cleanup_mode="delete")
    root = tmp_path / "artifacts"
    settings = with_overrides(config, database_url=postgres.get_uri(), artifact_root=str(root))
    await _database_of_the_old_layout(settings.database_url, root)
    pool = await database.create_pool(settings.database_url, settings)
    await migrate(pool, catalog.select(["artifacts"]))
    server = CairnServer(settings, catalog.select(["artifacts"]), pool)
    port = await server.start()
    try:
        async with cairn.ArtifactClient.insecure_connection("127.0.0.1", port) as client:
            assert await client.read("models/old.bin") == OLD
            assert (await client.stat("models/old.bin")).uri == (
                root / "default" / "models" / "old.bin"
            ).resolve().as_uri()
            await client.upload("models/old.bin", b"new", overwrite=True)
            assert await client.read("models/old.bin") == b"new"
        old_file = root / "default" / "models" / "old.bin"
        await eventually(lambda: not old_file.exists(), what="the replaced bytes removed")
        backend = backends.from_config(settings)
        await Janitor(ObjectStore(pool), backend, timedelta(0)).sweep()
        assert not (root / "default").exists()  # the temporary file, then its folders
        assert len([key for key, _ in await asyncio.to_thread(list, backend.scan())]) == 1
    finally:
        await server.stop(grace=1.0)
        await database.close_pool(pool)
        postgres.cleanup()
