"""An object store that stops answering (a hung MinIO, a black-holed route) and comes
back: calls that meet it end UNAVAILABLE within the store's timeout, and hold nothing
that the calls after its return need."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

import cairn
from cairn.exceptions import NotFoundError, UnavailableError
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
    async with _served(s3_config, pool, proxy, unique, s3_timeout_seconds=0.5) as client:
        yield client


@pytest.fixture
async def patient_store(
    s3_config: Config, pool: asyncpg.Pool, proxy: StallingProxy, unique: str
) -> AsyncIterator[cairn.ArtifactClient]:
    """As `store`, but the server waits for the store longer than the client waits for
    the server: the defaults (60 s and 30 s) scaled down ten times."""
    async with _served(s3_config, pool, proxy, unique, s3_timeout_seconds=6.0) as client:
        yield client


@contextlib.asynccontextmanager
async def _served(
    s3_config: Config,
    pool: asyncpg.Pool,
    proxy: StallingProxy,
    unique: str,
    s3_timeout_seconds: float,
) -> AsyncIterator[cairn.ArtifactClient]:
    settings = with_overrides(
        s3_config,
        s3_endpoint=f"127.0.0.1:{proxy.port}",
        s3_timeout_seconds=s3_timeout_seconds,
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


async def test_a_delete_answers_ok_though_the_store_hangs(
    patient_store: cairn.ArtifactClient, proxy: StallingProxy, pool: asyncpg.Pool
) -> None:
    """A delete is done once its removal commits in the database; the bytes the store
    does not remove meanwhile stay garbage, for the janitor. Before, the call waited
    for the store after its commit and answered DEADLINE_EXCEEDED for a delete that
    was done."""
    store = patient_store
    await store.upload("model.bin", CONTENT)
    key = await pool.fetchval(
        "SELECT storage_key FROM artifacts.objects WHERE project = $1", store.project
    )
    proxy.stall()
    await store.delete("model.bin", timeout=3.0)
    with pytest.raises(NotFoundError):
        await store.stat("model.bin")
    garbage = "SELECT count(*) FROM artifacts.garbage WHERE storage_key = $1"
    assert await pool.fetchval(garbage, key) == 1  # the janitor's to remove
