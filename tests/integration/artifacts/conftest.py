"""The artifact service on both backends: the local filesystem and S3 (moto on loopback)."""

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest

import cairn
from cairn.artifacts.v1 import artifacts_service_pb2_grpc
from cairn_server import catalog
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer
from tests.conftest import BUCKET, new_project, s3_client, serving


@pytest.fixture(scope="session")
async def s3_server_port(s3_config: Config, pool: asyncpg.Pool) -> AsyncIterator[int]:
    server = CairnServer(s3_config, catalog.select(["artifacts"]), pool)
    port = await server.start()
    yield port
    await server.stop(grace=1.0)


@pytest.fixture(params=["filesystem", "s3"])
async def store(
    request: pytest.FixtureRequest, server_port: int, s3_server_port: int, unique: str
) -> AsyncIterator[cairn.ArtifactClient]:
    """An ArtifactClient in a project of its own, on each backend in turn."""
    port = server_port if request.param == "filesystem" else s3_server_port
    project = await new_project(port, f"a-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", port, project=project, timeout=None
    ) as client:
        client.backend = request.param  # type: ignore[attr-defined]
        yield client


@pytest.fixture
async def stub(
    store: cairn.ArtifactClient, server_port: int, s3_server_port: int
) -> AsyncIterator[artifacts_service_pb2_grpc.ArtifactServiceStub]:
    """A bare stub of the server the store talks to, on a channel of its own."""
    port = server_port if store.backend == "filesystem" else s3_server_port  # type: ignore[attr-defined]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield artifacts_service_pb2_grpc.ArtifactServiceStub(channel)


@pytest.fixture
async def s3_store(s3_server_port: int, unique: str) -> AsyncIterator[cairn.ArtifactClient]:
    """An ArtifactClient in a project of its own, on S3 only (presigned URLs)."""
    project = await new_project(s3_server_port, f"s-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", s3_server_port, project=project, timeout=None
    ) as client:
        client.backend = "s3"  # type: ignore[attr-defined]
        yield client


@pytest.fixture
def raw_objects(store: cairn.ArtifactClient, config: Config, s3_config: Config):
    """Lists what the backend itself holds for the store's project, unfinished
    multipart uploads included: the keys of its uploads, in either layout."""

    def listing() -> list[str]:
        if store.backend == "s3":  # type: ignore[attr-defined]
            client = s3_client(s3_config)
            found, uploads = [], []
            for prefix in (f"store/_objects/{store.project}/", f"store/{store.project}/"):
                found += [
                    o.object_name
                    for o in client.list_objects(BUCKET, prefix=prefix, recursive=True)
                ]
                uploads += client._list_multipart_uploads(BUCKET, prefix=prefix).uploads
            return found + [f"multipart:{u.object_name}" for u in uploads]
        return sorted(
            str(p.relative_to(config.artifact_dir))
            for root in (
                config.artifact_dir / "_objects" / store.project,
                config.artifact_dir / store.project,
            )
            if root.exists()
            for p in root.rglob("*")
            if p.is_file()
        )

    return listing


@contextlib.asynccontextmanager
async def store_through(
    s3_config: Config, pool: asyncpg.Pool, proxy_port: int, project: str, **changes: object
) -> AsyncIterator[cairn.ArtifactClient]:
    """A client, in a project of its own, of an artifact server that reaches the S3
    store through a proxy on proxy_port (a faulty store), its janitor off, with the
    config's changes."""
    async with serving(
        s3_config,
        pool,
        ["artifacts"],
        s3_endpoint=f"127.0.0.1:{proxy_port}",
        artifact_janitor_interval_seconds=0,
        **changes,
    ) as port:
        project = await new_project(port, project)
        async with cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", port, project=project
        ) as client:
            yield client


class CountingStub:
    """A client's stub whose calls of one method are counted (each call looks the
    method up once)."""

    def __init__(self, stub: object, method: str) -> None:
        self._stub, self._method, self.calls = stub, method, 0

    def __getattr__(self, name: str) -> object:
        if name == self._method:
            self.calls += 1
        return getattr(self._stub, name)


def count_calls(holder: Any, method: str) -> CountingStub:
    """Has holder, a part of a client that calls through its `_stub`, count its calls
    of method from now on."""
    counting = CountingStub(holder._stub, method)
    holder._stub = counting
    return counting
