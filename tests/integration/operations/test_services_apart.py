"""Tracking and artifacts served by separate servers on one database: a GC on the
tracking server removes the rows and queues their artifact locations; the objects wait
until the artifacts server drains the queue (here: in its own GC run).

On a database of its own: the queue is every project's, so on the shared one any other
test's server hosting artifacts may drain it first (a janitor pass at start, or a GC
operation another test left and this test's artifacts server takes over)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import urllib.request
from collections.abc import AsyncIterator

import asyncpg
import pytest

import cairn
from cairn.exceptions import FailedPreconditionError, NotFoundError
from cairn.types import Operation, OperationState
from cairn_server import catalog
from cairn_server.common import database
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer, migrate
from tests.conftest import HeldBack, new_project, with_overrides


@pytest.fixture
async def pool(own_postgres, config: Config) -> AsyncIterator[asyncpg.Pool]:
    pool = await database.create_pool(own_postgres.get_uri(), config)
    await migrate(pool, catalog.select([]))
    yield pool
    await database.close_pool(pool)


@pytest.fixture
async def ports(
    request: pytest.FixtureRequest, config: Config, pool: asyncpg.Pool
) -> AsyncIterator[dict[str, int]]:
    """The ports of the two servers; on the filesystem, or on S3 where a test says
    `@pytest.mark.parametrize("ports", ["s3"], indirect=True)`."""
    backend = request.getfixturevalue("s3_config") if getattr(request, "param", "") else config
    # No janitor pass of its own: only a GC run drains the queue here.
    quiet = with_overrides(backend, artifact_janitor_interval_seconds=0)
    servers = {
        name: CairnServer(quiet, catalog.select([name]), pool) for name in ("tracking", "artifacts")
    }
    ports = {name: await server.start() for name, server in servers.items()}
    yield ports
    for server in servers.values():
        await server.stop(grace=0)


async def test_artifacts_wait_in_the_queue_for_the_artifacts_service(
    ports: dict[str, int], pool: asyncpg.Pool, config: Config, unique: str
) -> None:
    project = await new_project(ports["tracking"], f"apart-{unique}")

    def connect(service: str) -> cairn.Client:
        return cairn.Client(f"http://127.0.0.1:{ports[service]}", project=project)

    async with connect("tracking") as tracking, connect("artifacts") as artifacts:
        experiment_id = await tracking.tracking.create_experiment("apart")
        run = await tracking.tracking.create_run(experiment_id)
        root = run.info.artifact_uri.removeprefix(f"cairn-artifacts://{project}/")
        await artifacts.artifacts.upload(f"{root}/model.bin", b"m" * 1000)
        key = await pool.fetchval(
            "SELECT storage_key FROM artifacts.objects WHERE project = $1", project
        )
        await tracking.tracking.delete_run(run.info.run_id)

        at_tracking = await tracking.operations.start_garbage_collection(datetime.timedelta(0))
        done = await tracking.operations.wait_operation(at_tracking.name, timeout=30)
        assert done.state is OperationState.SUCCEEDED, done.errors
        assert done.counts["runs"] >= 1 and "artifact_objects" not in done.counts
        with pytest.raises(NotFoundError):
            await tracking.tracking.get_run(run.info.run_id)
        assert (await artifacts.artifacts.stat(f"{root}/model.bin")).size == 1000
        assert (config.artifact_dir / key).exists()

        at_artifacts = await artifacts.operations.start_garbage_collection(datetime.timedelta(0))
        done = await artifacts.operations.wait_operation(at_artifacts.name, timeout=30)
        assert done.state is OperationState.SUCCEEDED, done.errors
        assert done.counts["artifact_objects"] >= 1 and done.counts["artifact_bytes"] >= 1000
        with pytest.raises(NotFoundError):
            await artifacts.artifacts.stat(f"{root}/model.bin")
        assert not (config.artifact_dir / key).exists()


async def test_an_upload_begun_before_its_run_was_collected_is_refused_after(
    ports: dict[str, int], pool: asyncpg.Pool, unique: str
) -> None:
    """An upload under way as the tracking server collected its deleted run, which
    published before the artifacts server drained the run's directory, stayed for
    good: the drain took it for a reuse's, written after the directory was queued. The
    directory takes no file from its queueing on: nothing of it is stored."""
    async with _a_run(ports, f"straddle-{unique}") as (tracking, artifacts, run_id, path):
        source = HeldBack()
        upload = asyncio.ensure_future(artifacts.artifacts.upload(path, source))  # type: ignore[arg-type]
        try:
            assert await asyncio.to_thread(source.under_way.wait, 30)
            await tracking.tracking.delete_run(run_id)
            assert (await _collect(tracking)).counts["runs"] == 1
        finally:
            source.go.set()
        with pytest.raises(FailedPreconditionError) as refused:  # publishing after it
            await upload
        assert refused.value.reason == "LOCATION_DELETED"

        assert (await _collect(artifacts)).counts["artifact_objects"] == 0
        with pytest.raises(NotFoundError):
            await artifacts.artifacts.stat(path)


@pytest.mark.parametrize("ports", ["s3"], indirect=True)
async def test_a_presigned_upload_begun_before_its_run_was_collected_is_refused_after(
    ports: dict[str, int], unique: str
) -> None:
    """As a streamed upload: a presigned PUT made before the collection and confirmed
    after is the old run's (its bytes are copied into an upload begun at confirmation,
    after the collection; they began with the URL's), and is refused."""
    async with _a_run(ports, f"presigned-{unique}") as (tracking, artifacts, run_id, path):
        put = await artifacts.artifacts.presigned_url(path, "PUT")
        await asyncio.to_thread(_put, put.url, b"sent through the URL")
        await tracking.tracking.delete_run(run_id)
        assert (await _collect(tracking)).counts["runs"] == 1
        with pytest.raises(FailedPreconditionError) as refused:
            await artifacts.artifacts.confirm_upload(path, upload_id=put.upload_id)
        assert refused.value.reason == "LOCATION_DELETED"

        assert (await _collect(artifacts)).counts["artifact_objects"] == 0
        with pytest.raises(NotFoundError):
            await artifacts.artifacts.stat(path)


@pytest.mark.parametrize("ports", ["s3"], indirect=True)
async def test_a_presigned_upload_not_confirmed_when_its_run_is_drained_is_ended(
    ports: dict[str, int], unique: str
) -> None:
    """Confirmed only after the drain, a presigned PUT made before its run was collected
    finds its upload ended, and the answer says its run's directory went for good."""
    async with _a_run(ports, f"unconfirmed-{unique}") as (tracking, artifacts, run_id, path):
        put = await artifacts.artifacts.presigned_url(path, "PUT")
        await asyncio.to_thread(_put, put.url, b"sent through the URL")
        await tracking.tracking.delete_run(run_id)
        await _collect(tracking)
        await _collect(artifacts)
        with pytest.raises(FailedPreconditionError) as ended:
            await artifacts.artifacts.confirm_upload(path, upload_id=put.upload_id)
        assert ended.value.reason == "LOCATION_DELETED"
        assert "deleted for good with the run" in str(ended.value)
        with pytest.raises(NotFoundError):
            await artifacts.artifacts.stat(path)


@contextlib.asynccontextmanager
async def _a_run(
    ports: dict[str, int], name: str
) -> AsyncIterator[tuple[cairn.Client, cairn.Client, str, str]]:
    """Clients of the tracking and the artifacts server in a new project, a new run's
    id and a path in its artifacts."""
    project = await new_project(ports["tracking"], name)

    def connect(service: str) -> cairn.Client:
        return cairn.Client(f"http://127.0.0.1:{ports[service]}", project=project)

    async with connect("tracking") as tracking, connect("artifacts") as artifacts:
        run = await tracking.tracking.create_run(await tracking.tracking.create_experiment("e"))
        root = run.info.artifact_uri.removeprefix(f"cairn-artifacts://{project}/")
        yield tracking, artifacts, run.info.run_id, f"{root}/late.bin"


def _put(url: str, body: bytes) -> None:
    # Typed: urllib's default (a form) has moto read the body as form fields.
    headers = {"Content-Type": "application/octet-stream"}
    request = urllib.request.Request(url, data=body, method="PUT", headers=headers)
    with urllib.request.urlopen(request, timeout=10):  # loopback only
        pass


async def _collect(client: cairn.Client) -> Operation:
    started = await client.operations.start_garbage_collection(datetime.timedelta(0))
    done = await client.operations.wait_operation(started.name, timeout=30)
    assert done.state is OperationState.SUCCEEDED, done.errors
    return done
