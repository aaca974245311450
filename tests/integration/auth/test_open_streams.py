"""Streams outlive their admission: a key revoked or a role taken away while one runs
stops it too, not only the caller's next call. An upload is not published, a download
ends; a download outlives a database outage all the same."""

from __future__ import annotations

import asyncio
import hashlib
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import cairn
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.artifacts.v1 import artifacts_service_pb2_grpc as rpc
from cairn.exceptions import (
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    from_grpc_error,
)
from cairn.types import ApiKeyExpirationTime, ProjectRole
from cairn_server import catalog
from cairn_server.artifacts import presigned
from cairn_server.artifacts.presigned_urls import Confirmations
from cairn_server.auth.store import AuthStore
from cairn_server.common import access, database
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer
from cairn_server.operations.store import OperationStore
from tests.conftest import eventually, with_overrides
from tests.integration.auth.conftest import World, populated, serve
from tests.proxy import PostgresProxy

MIB = 1024 * 1024


async def _editor(world: World, name: str) -> tuple[str, str]:
    user = f"{name}-{world.project}"
    async with world.auth("global_admin") as admin:
        await admin.add_user_project_role(user, world.project, ProjectRole.EDITOR)
        key = await admin.create_user_api_key(user, name, ApiKeyExpirationTime.ONE_YEAR)
    return user, key


def _bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


async def _upload_across(
    world: World, key: str, path: str, meanwhile: Callable[[], Awaitable[None]]
) -> tuple[grpc.StatusCode, str | None]:
    """An upload whose caller loses its key or role between its two chunks: the status
    and reason it ends with."""
    halves = b"a" * 1000, b"b" * 1000
    async with grpc.aio.insecure_channel(f"127.0.0.1:{world.port}") as channel:
        call = rpc.ArtifactServiceStub(channel).Upload(metadata=_bearer(key))
        header = api.UploadHeader(project=world.project, path=path, expected_size=2000)
        await call.write(api.UploadRequest(header=header))
        await call.write(api.UploadRequest(chunk=halves[0]))
        await meanwhile()
        await call.write(api.UploadRequest(chunk=halves[1]))
        sha256 = hashlib.sha256(b"".join(halves)).hexdigest()
        await call.write(api.UploadRequest(finish=api.UploadFinish(sha256=sha256)))
        await call.done_writing()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
    error = from_grpc_error(raised.value)
    return error.code, error.reason


async def _published(world: World, path: str) -> bool:
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", world.port, world.keys["global_admin"], project=world.project
    ) as artifacts:
        try:
            await artifacts.stat(path)
        except NotFoundError:
            return False
    return True


async def test_an_upload_whose_key_is_revoked_meanwhile_is_not_published(world: World) -> None:
    _, key = await _editor(world, "revoked")

    async def revoke() -> None:
        async with world.auth("global_admin") as admin:
            await admin.delete_api_key(key)

    ended = await _upload_across(world, key, "streams/revoked.bin", revoke)
    assert ended == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_REVOKED")
    assert not await _published(world, "streams/revoked.bin")


async def test_an_upload_whose_role_is_taken_away_meanwhile_is_not_published(
    world: World,
) -> None:
    user, key = await _editor(world, "demoted")

    async def demote() -> None:
        async with world.auth("global_admin") as admin:
            await admin.delete_project_role(user, world.project)

    code, _ = await _upload_across(world, key, "streams/demoted.bin", demote)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert not await _published(world, "streams/demoted.bin")


async def test_a_download_ends_once_its_key_is_revoked(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(access, "READMIT_SECONDS", 0.0)  # admitted again at every chunk
    _, key = await _editor(world, "reader")
    size = 24 << 20
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", world.port, world.keys["global_admin"], project=world.project
    ) as artifacts:
        await artifacts.upload("streams/large.bin", b"x" * size)
    received = 0
    # Without BDP probes the window stays small: the server cannot send the rest of the
    # download while the revocation is under way.
    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.http2.bdp_probe", 0)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{world.port}", options=options) as channel:
        stub = rpc.ArtifactServiceStub(channel)
        request = api.DownloadRequest(project=world.project, path="streams/large.bin")
        messages = stub.Download(request, metadata=_bearer(key)).__aiter__()
        received += len((await anext(messages)).chunk)
        async with world.auth("global_admin") as admin:
            await admin.delete_api_key(key)
        await eventually(lambda: _refused(world, key), what="the revocation seen by new calls")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for message in messages:
                received += len(message.chunk)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert received < size


async def _refused(world: World, key: str) -> bool:
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", world.port, key, project=world.project
    ) as artifacts:
        try:
            await artifacts.stat("streams/large.bin")
        except UnauthenticatedError:
            return True
    return False


@pytest.mark.parametrize("fault", ["refused", "partitioned"])
async def test_a_download_outlives_a_database_outage_though_admitted_again(
    config: Config, pool: asyncpg.Pool, unique: str, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """A download reads the store, not the database; admitting it again during an
    outage cannot be done, and ended it UNAVAILABLE (the database refusing connections)
    or stalled it (a partition, where the check waited for ever)."""
    monkeypatch.setattr(access, "READMIT_SECONDS", 0.0)
    monkeypatch.setattr(access, "READMIT_TIMEOUT_SECONDS", 0.1)
    key, _ = await AuthStore(pool).create_key(f"dl-{unique}", "k", None, global_admin=True)
    proxy = PostgresProxy(config.database_url)
    settings = with_overrides(
        config,
        auth="api_key",
        database_url=await proxy.start(),
        db_acquire_timeout_seconds=0.3,
        db_pool_size=1,  # caches no key check (docs/auth.md): each asks the database
        health_probe_interval_seconds=0.1,
        health_probe_timeout_seconds=0.3,
    )
    server_pool = await database.create_pool(settings.database_url, settings)
    server = CairnServer(settings, catalog.select([]), server_pool)
    port = await server.start()
    size = 24 << 20
    try:
        async with cairn.AuthClient.insecure_connection("127.0.0.1", port, key) as admin:
            await admin.create_project(f"dl-{unique}")
        async with cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", port, key, project=f"dl-{unique}"
        ) as artifacts:
            await artifacts.upload("large.bin", b"x" * size)
        options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.http2.bdp_probe", 0)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            request = api.DownloadRequest(project=f"dl-{unique}", path="large.bin")
            messages = rpc.ArtifactServiceStub(channel).Download(request, metadata=_bearer(key))
            received = 0
            async with asyncio.timeout(60):  # stalled for ever before, in a partition
                async for message in messages:
                    if not received:  # the database goes away, and the server knows it
                        await (proxy.close() if fault == "refused" else _partition(proxy))
                        await eventually(lambda: _away(channel), what="the outage seen")
                    received += len(message.chunk)
        assert received == size
    finally:
        proxy.heal()
        await server.stop(grace=1.0)
        await database.close_pool(server_pool)
        await proxy.close()


async def _partition(proxy: PostgresProxy) -> None:
    proxy.partition()


async def _away(channel: grpc.aio.Channel) -> bool:
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
    return reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
async def s3_world(s3_config: Config, pool: asyncpg.Pool, unique: str) -> AsyncIterator[World]:
    """A world on the S3 backend, whose uploads may go by presigned URLs."""
    server, port = await serve(
        with_overrides(s3_config, auth="api_key", auth_failure_limit=10**6), pool
    )
    yield await populated(port, pool, unique)
    await server.stop(grace=0)


async def test_parts_whose_callers_key_is_revoked_while_they_complete_are_not_published(
    s3_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A completion reads the object back and hashes it, seconds for a large one: the
    key revoked meanwhile, it published all the same, where a stream checks again."""
    _, key = await _editor(s3_world, "parts")
    read_back = presigned.PresignedTransfers._read_back

    async def revoked_meanwhile(self: Any, *args: Any) -> Any:
        async with s3_world.auth("global_admin") as admin:
            await admin.delete_api_key(key)
        return await read_back(self, *args)

    monkeypatch.setattr(presigned.PresignedTransfers, "_read_back", revoked_meanwhile)
    monkeypatch.setattr(presigned, "PART_SIZE", 5 * MIB)
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", s3_world.port, key, project=s3_world.project
    ) as artifacts:
        artifacts.direct_threshold = MIB
        with pytest.raises(UnauthenticatedError) as refused:
            await artifacts.upload("parts/revoked.bin", b"p" * (6 * MIB))
    assert refused.value.reason == "API_KEY_REVOKED"
    assert not await _published(s3_world, "parts/revoked.bin")


async def test_a_put_whose_callers_role_is_taken_away_while_it_is_confirmed_is_not_published(
    s3_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, key = await _editor(s3_world, "confirm")
    seal = Confirmations._seal

    async def demoted_meanwhile(self: Any, *args: Any) -> Any:
        async with s3_world.auth("global_admin") as admin:
            await admin.delete_project_role(user, s3_world.project)
        return await seal(self, *args)

    monkeypatch.setattr(Confirmations, "_seal", demoted_meanwhile)
    body = b"put around the service"
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", s3_world.port, key, project=s3_world.project
    ) as artifacts:
        put = await artifacts.presigned_url("put/demoted.bin", "PUT")
        request = urllib.request.Request(put.url, body, put.headers, method="PUT")
        await asyncio.to_thread(urllib.request.urlopen, request)
        with pytest.raises(PermissionDeniedError):
            await artifacts.confirm_upload("put/demoted.bin", upload_id=put.upload_id)
    assert not await _published(s3_world, "put/demoted.bin")


async def test_a_wait_for_an_operation_ends_once_its_key_is_revoked(
    world: World, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WaitOperation reads an operation every 0.2 s for up to a minute: its key revoked
    meanwhile, it kept reading and answered, where every other long call ends."""
    key, _ = await AuthStore(pool).create_key(
        f"waiter-{world.project}", "w", None, global_admin=True
    )
    operation = uuid.uuid4()  # under way on another server, its lease far ahead
    await pool.execute(
        """INSERT INTO operations.operations
               (operation_id, kind, state, spec, steps, owner, lease_until)
           VALUES ($1, 1, 2, '{}', '{}', $2, now() + interval '1 hour')""",
        operation,
        uuid.uuid4(),
    )
    read = OperationStore.get

    async def revoked_after_the_first_read(self: Any, name: str) -> Any:
        found = await read(self, name)
        async with world.auth("global_admin") as admin:
            await admin.delete_api_key(key)
        return found

    async with cairn.OperationsClient.insecure_connection(
        "127.0.0.1", world.port, key
    ) as operations:
        monkeypatch.setattr(OperationStore, "get", revoked_after_the_first_read)
        with pytest.raises(UnauthenticatedError) as refused:
            await operations.wait_operation(f"operations/{operation}", timeout=3)
    assert refused.value.reason == "API_KEY_REVOKED"
