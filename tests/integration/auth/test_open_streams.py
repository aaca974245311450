"""Streams outlive their admission: a key revoked or a role taken away while one runs
stops it too, not only the caller's next call. An upload is not published, a download
or a metric history ends."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

import grpc
import pytest

import cairn
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.artifacts.v1 import artifacts_service_pb2_grpc as rpc
from cairn.exceptions import NotFoundError, from_grpc_error
from cairn.types import ApiKeyExpirationTime, ProjectRole
from cairn_server.common import access
from tests.integration.auth.conftest import World


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
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{world.port}", options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as channel:
        stub = rpc.ArtifactServiceStub(channel)
        request = api.DownloadRequest(project=world.project, path="streams/large.bin")
        messages = stub.Download(request, metadata=_bearer(key)).__aiter__()
        received += len((await anext(messages)).chunk)
        async with world.auth("global_admin") as admin:
            await admin.delete_api_key(key)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for message in messages:
                received += len(message.chunk)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert received < size
