"""An overwrite whose database goes away just before it publishes: the old object stays
whole, and the new bytes become litter the janitor removes. On a PostgreSQL of its own,
so stopping it harms no other test."""

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

import cairn
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.exceptions import CairnError
from cairn_server import catalog
from cairn_server.artifacts import backends
from cairn_server.artifacts.janitor import Janitor
from cairn_server.artifacts.store import ObjectStore
from cairn_server.common import database
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer, migrate
from tests.conftest import eventually, stop_postgres, with_overrides


@pytest.fixture(params=["filesystem", "s3"])
async def outage(
    request, own_postgres, config: Config, s3_config: Config, tmp_path, unique: str
) -> AsyncIterator[tuple[cairn.ArtifactClient, Config, asyncpg.Pool]]:
    """A server on the private PostgreSQL, with a store of its own: its janitor must not
    see bytes the other tests' database refers to."""
    base = s3_config if request.param == "s3" else config
    settings = with_overrides(
        base,
        database_url=own_postgres.get_uri(),
        artifact_root=str(tmp_path / "artifacts"),
        s3_prefix=f"outage-{unique}",
    )
    pool = await database.create_pool(settings.database_url, settings)
    services = catalog.select(["artifacts"])
    await migrate(pool, services)
    server = CairnServer(settings, services, pool)
    port = await server.start()
    try:
        async with cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", port, timeout=30
        ) as client:
            yield client, settings, pool
    finally:
        own_postgres.ensure_postgres_running()
        await server.stop(grace=1.0)
        await database.close_pool(pool)


def _keys(settings: Config) -> list[str]:
    backend = backends.from_config(settings)
    return sorted(key for key, _ in backend.scan())


async def test_an_overwrite_cut_off_from_its_database_keeps_the_old_object(
    outage, own_postgres
) -> None:
    client, settings, pool = outage
    path = f"outage/{os.urandom(4).hex()}.bin"
    old = os.urandom(3 * 1024 * 1024)
    await client.upload(path, old)
    keys_before = await asyncio.to_thread(_keys, settings)
    streamed = asyncio.Event()
    database_down = asyncio.Event()

    async def requests():
        yield api.UploadRequest(
            header=api.UploadHeader(project=client.project, path=path, overwrite=True)
        )
        for _ in range(8):
            yield api.UploadRequest(chunk=os.urandom(1024 * 1024))
        streamed.set()
        await database_down.wait()
        yield api.UploadRequest(finish=api.UploadFinish())

    overwrite = asyncio.ensure_future(
        client._transport.client_stream(client._stub.Upload, requests())
    )
    await streamed.wait()
    if settings.artifact_backend == "filesystem":  # S3 shows an object only once complete
        await eventually(
            lambda: len(_keys(settings)) > len(keys_before), what="the new bytes arriving"
        )
    await asyncio.to_thread(stop_postgres, own_postgres)
    database_down.set()
    with pytest.raises(CairnError):
        await overwrite
    await asyncio.to_thread(own_postgres.ensure_postgres_running)

    async def old_object_served() -> bool:
        try:
            return await client.read(path) == old
        except CairnError:  # the pool is still finding its way back
            return False

    await eventually(old_object_served, what="the old object served again")
    assert (await client.stat(path)).size == len(old)
    janitor = Janitor(ObjectStore(pool), backends.from_config(settings), timedelta(0))
    await janitor.sweep()
    assert await asyncio.to_thread(_keys, settings) == keys_before
    assert await client.read(path) == old
