"""An object store that stops answering (a hung MinIO, a black-holed route) and comes
back: calls that meet it end UNAVAILABLE within the store's timeout, and hold nothing
that the calls after its return need."""

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

import cairn
from cairn.exceptions import UnavailableError
from cairn_server import catalog
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer
from tests.conftest import new_project, with_overrides
from tests.proxy import StallingProxy

# More downloads than the loop's default executor has threads on a small machine
# (CPUs + 4), where calls hung in it left none for the calls after the store returned.
HUNG_DOWNLOADS = 8
CONTENT = b"stored before the store went silent"


@pytest.fixture
async def proxy(s3_config: Config) -> AsyncIterator[StallingProxy]:
    host, port = s3_config.s3_endpoint.split(":")
    proxy = StallingProxy(host, int(port))
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def store(
    s3_config: Config, pool: asyncpg.Pool, proxy: StallingProxy, unique: str
) -> AsyncIterator[cairn.ArtifactClient]:
    """An ArtifactClient of a server that reaches the store through the proxy."""
    settings = with_overrides(
        s3_config,
        s3_endpoint=f"127.0.0.1:{proxy.port}",
        s3_timeout_seconds=0.5,
        artifact_janitor_interval_seconds=0,
    )
    server = CairnServer(settings, catalog.select(["artifacts"]), pool)
    port = await server.start()
    try:
        project = await new_project(port, f"silent-{unique}")
        async with cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", port, project=project
        ) as client:
            yield client
    finally:
        await server.stop(grace=0.5)


async def test_a_silent_store_fails_calls_and_holds_nothing_once_back(
    store: cairn.ArtifactClient, proxy: StallingProxy
) -> None:
    await store.upload("model.bin", CONTENT)
    proxy.stall()
    # Deadlines far past the store's timeout (0.5 s a request, four attempts by the
    # channel): each call ends on the store's timeout, not on its deadline.
    hung = await asyncio.gather(
        *(store.read("model.bin", timeout=20) for _ in range(HUNG_DOWNLOADS)),
        return_exceptions=True,
    )
    for outcome in hung:
        assert isinstance(outcome, UnavailableError), outcome
        assert outcome.reason == "OBJECT_STORE_UNAVAILABLE"
    proxy.resume()  # the requests that met the stall stay lost, as on a black-holed route
    assert await store.read("model.bin", timeout=10) == CONTENT
