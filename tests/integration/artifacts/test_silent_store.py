"""An object store that stops answering (a hung MinIO, a black-holed route) and comes
back: calls that meet it end UNAVAILABLE within the store's timeout, and hold nothing
that the calls after its return need."""

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

import cairn
from cairn.exceptions import NotFoundError, UnavailableError
from cairn_server import catalog
from cairn_server.artifacts import backends
from cairn_server.artifacts.janitor import Janitor
from cairn_server.artifacts.store import ObjectStore
from cairn_server.common import database
from cairn_server.common.config import Config
from cairn_server.common.errors import Unavailable
from cairn_server.common.server import migrate
from tests.conftest import with_overrides
from tests.integration.artifacts.conftest import store_through
from tests.proxy import StallingProxy

# More downloads than the loop's default executor has threads on a small machine
# (CPUs + 4), where calls hung in it left none for the calls after the store returned.
HUNG_DOWNLOADS = 8
CONTENT = b"stored before the store went silent"
STORE_TIMEOUT = 1.0
# Far more than the first chunk of a download (4 MiB) and the socket buffers beyond it.
BROKEN_SIZE = 32 * 1024 * 1024


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
    async with store_through(
        s3_config, pool, proxy.port, f"silent-{unique}", s3_timeout_seconds=s3_timeout_seconds
    ) as client:
        yield client


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


async def test_a_download_whose_store_connection_breaks_midway_goes_on_where_it_stopped(
    store: cairn.ArtifactClient, proxy: StallingProxy
) -> None:
    """The stream ends UNAVAILABLE (OBJECT_STORE_UNAVAILABLE) after the bytes that
    arrived; the client opens it again from there, as for a stream the server cut."""
    body = os.urandom(BROKEN_SIZE)
    await store.upload("big.bin", body)
    reading = store.open("big.bin")
    received = [await anext(reading)]
    proxy.stall()  # cuts the connection the server reads the object through
    proxy.resume()
    received += [chunk async for chunk in reading]
    assert b"".join(received) == body


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


async def test_the_janitor_gives_a_batch_up_at_once_when_the_store_hangs(
    own_postgres, s3_config: Config, proxy: StallingProxy
) -> None:
    """A batch of garbage the store does not answer for is put behind the rest, and the
    pass ends with the store's error (an outage, to a garbage collection) after one
    timeout. Before, each key was then tried on its own, each waiting the store's
    timeout: 21 s for 20 keys here, about 17 hours for a batch of 1000 at the
    defaults, while a collection running it held its lease. On a database of its own:
    garbage another test left would be swept too."""
    settings = with_overrides(
        s3_config, s3_endpoint=f"127.0.0.1:{proxy.port}", s3_timeout_seconds=STORE_TIMEOUT
    )
    keys = [backends.new_key("hung", uuid.uuid4().hex) for _ in range(20)]
    pool = await database.create_pool(own_postgres.get_uri(), settings)
    try:
        await migrate(pool, catalog.select(["artifacts"]))
        await pool.execute(
            "INSERT INTO artifacts.garbage (storage_key) SELECT unnest($1::text[])", keys
        )
        janitor = Janitor(ObjectStore(pool), backends.from_config(settings), timedelta(0))
        proxy.stall()
        began = time.monotonic()
        with pytest.raises(Unavailable):
            await janitor.collect_garbage()
        assert time.monotonic() - began < 5 * STORE_TIMEOUT
        left = await pool.fetchval("SELECT count(*) FROM artifacts.garbage")
        assert left == len(keys)  # each key still the janitor's
    finally:
        await database.close_pool(pool)
