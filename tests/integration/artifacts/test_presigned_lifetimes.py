"""What a call hands out in its key's name, with authentication on: presigned S3 URLs
(moto) and byte-endpoint tickets expire no later than the key that asked for them, as
a key it creates may not (docs/auth.md); and an upload's ticket refused before its
request was taken in is left to a request sent right."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import json
import socket
import urllib.parse
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest

import cairn
from cairn._api_keys import prefix_of
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.artifacts.v1 import artifacts_service_pb2_grpc as rpc
from cairn.exceptions import InvalidArgumentError
from cairn.types import ApiKeyExpirationTime
from cairn_server.artifacts import presigned
from cairn_server.common.config import Config
from tests.conftest import with_overrides
from tests.integration.auth.conftest import World, populated, serve

MIB = 1024 * 1024
KEY_SECONDS = 120  # what the short-lived keys have left
SMALL = b"a few bytes"


async def _world(config: Config, pool: asyncpg.Pool, unique: str) -> AsyncIterator[World]:
    server, port = await serve(
        with_overrides(config, auth="api_key", auth_failure_limit=10**6), pool
    )
    yield await populated(port, pool, unique)
    await server.stop(grace=0)


@pytest.fixture
async def s3_world(s3_config: Config, pool: asyncpg.Pool, unique: str) -> AsyncIterator[World]:
    async for world in _world(s3_config, pool, unique):
        yield world


@pytest.fixture
async def fs_world(config: Config, pool: asyncpg.Pool, unique: str) -> AsyncIterator[World]:
    async for world in _world(config, pool, unique):
        yield world


async def _short_key(world: World, pool: asyncpg.Pool, who: str, seconds: int = KEY_SECONDS) -> str:
    """A new key of who's, expiring seconds from now."""
    async with world.auth("global_admin") as admin:
        key = await admin.create_user_api_key(
            world.users[who], "short", ApiKeyExpirationTime.ONE_YEAR
        )
    await pool.execute(
        "UPDATE auth.api_keys SET expire_time = now() + make_interval(secs => $2) "
        "WHERE prefix = $1",
        prefix_of(key),
        seconds,
    )
    return key


def _artifacts(world: World, key: str) -> cairn.ArtifactClient:
    return cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", world.port, key, project=world.project
    )


async def _put_object(world: World, path: str) -> None:
    async with _artifacts(world, world.keys["editor"]) as artifacts:
        artifacts.direct_threshold = None
        await artifacts.upload(path, SMALL)


async def _tickets(
    world: World,
    key: str,
    *requests: api.CreateDownloadTicketRequest | api.CreateUploadTicketRequest,
) -> list[api.CreateDownloadTicketResponse | api.CreateUploadTicketResponse]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{world.port}") as channel:
        stub = rpc.ArtifactServiceStub(channel)
        metadata = (("authorization", f"Bearer {key}"),)
        return [
            await (
                stub.CreateDownloadTicket(request, metadata=metadata)
                if isinstance(request, api.CreateDownloadTicketRequest)
                else stub.CreateUploadTicket(request, metadata=metadata)
            )
            for request in requests
        ]


def _signed_seconds(url: str) -> int:
    """The lifetime S3 holds a presigned URL to (X-Amz-Expires)."""
    (seconds,) = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)["X-Amz-Expires"]
    return int(seconds)


def _ticket_expiry(ticket: str) -> float:
    """When a byte-endpoint ticket expires: its claims, read as any holder can read them."""
    payload = ticket.partition(".")[0]
    return float(
        json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["expires"]
    )


def _download_ticket(
    world: World, path: str, *, presigned: bool
) -> api.CreateDownloadTicketRequest:
    return api.CreateDownloadTicketRequest(
        project=world.project, path=path, accept_presigned=presigned
    )


def _upload_ticket(
    world: World, path: str, size: int, *, presigned: bool
) -> api.CreateUploadTicketRequest:
    header = api.UploadHeader(project=world.project, path=path, expected_size=size)
    return api.CreateUploadTicketRequest(header=header, accept_presigned=presigned)


async def test_urls_the_server_times_expire_with_the_key_that_asked(
    s3_world: World, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key with two minutes left was given a download URL of 300 s (5 minutes at
    least), part URLs as long, and a CreatePresignedUrl of the default hour: each worked
    on S3 long after the key that asked for it had expired."""
    monkeypatch.setattr(presigned, "PART_SIZE", 5 * MIB)
    await _put_object(s3_world, "life/obj.bin")
    key = await _short_key(s3_world, pool, "editor")
    download, upload = await _tickets(
        s3_world,
        key,
        _download_ticket(s3_world, "life/obj.bin", presigned=True),
        _upload_ticket(s3_world, "life/parts.bin", 6 * MIB, presigned=True),
    )
    async with _artifacts(s3_world, key) as artifacts:
        default = await artifacts.presigned_url("life/obj.bin")
    lifetimes = [_signed_seconds(download.url), _signed_seconds(default.url)]
    lifetimes += [_signed_seconds(url) for url in upload.parts.part_urls]
    assert len(lifetimes) == 4
    assert all(KEY_SECONDS - 10 <= seconds <= KEY_SECONDS for seconds in lifetimes), lifetimes

    # A key that outlives them leaves them as they were.
    (download,) = await _tickets(
        s3_world,
        s3_world.keys["editor"],
        _download_ticket(s3_world, "life/obj.bin", presigned=True),
    )
    assert _signed_seconds(download.url) == presigned.MIN_URL_SECONDS


async def test_a_url_asked_to_outlive_its_key_is_refused(
    s3_world: World, pool: asyncpg.Pool
) -> None:
    """CreatePresignedUrl(expires_in=3600) with a key two minutes from its expiry was
    signed for the hour asked, outliving the key by 58 minutes. Now it is refused, as a
    key asked to outlive its parent is, rather than cut short unannounced."""
    await _put_object(s3_world, "ask/obj.bin")
    key = await _short_key(s3_world, pool, "editor")
    async with _artifacts(s3_world, key) as artifacts:
        with pytest.raises(InvalidArgumentError) as refused:
            await artifacts.presigned_url("ask/obj.bin", expires_in=3600)
        with pytest.raises(InvalidArgumentError):
            await artifacts.presigned_url("ask/new.bin", "PUT", expires_in=3600)
        within = await artifacts.presigned_url("ask/obj.bin", expires_in=60)
    assert refused.value.field_violations[0][0] == "expires_in"
    assert "cannot outlive the API key" in str(refused.value)
    assert _signed_seconds(within.url) == 60

    async with _artifacts(s3_world, s3_world.keys["editor"]) as artifacts:
        asked = await artifacts.presigned_url("ask/obj.bin", expires_in=3600)
    assert _signed_seconds(asked.url) == 3600


async def test_byte_endpoint_tickets_expire_with_the_key(
    fs_world: World, pool: asyncpg.Pool
) -> None:
    """A ticket lasted its minute whatever its key had left: a download's ticket, never
    checked again once made, worked up to a minute past its key's expiry."""
    await _put_object(fs_world, "tk/obj.bin")
    key = await _short_key(fs_world, pool, "editor", 20)
    key_expires = await pool.fetchval(
        "SELECT expire_time FROM auth.api_keys WHERE prefix = $1", prefix_of(key)
    )
    download, upload = await _tickets(
        fs_world,
        key,
        _download_ticket(fs_world, "tk/obj.bin", presigned=False),
        _upload_ticket(fs_world, "tk/new.bin", 3, presigned=False),
    )
    for ticket in (download.ticket.ticket, upload.ticket.ticket):
        assert _ticket_expiry(ticket) == pytest.approx(key_expires.timestamp(), abs=0.01)

    (download,) = await _tickets(
        fs_world, fs_world.keys["editor"], _download_ticket(fs_world, "tk/obj.bin", presigned=False)
    )
    now = datetime.datetime.now(datetime.UTC).timestamp()
    assert _ticket_expiry(download.ticket.ticket) == pytest.approx(now + 60, abs=5)


def _exchange(port: int, request: bytes) -> int:
    """Sends raw bytes to the byte endpoint; the status of its final answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while received := connection.recv(65536):
            answer += received
    if answer.startswith(b"HTTP/1.1 100"):
        answer = answer.split(b"\r\n\r\n", 1)[1]
    return int(answer.split(b" ", 2)[1])


async def test_an_upload_ticket_refused_before_its_upload_is_not_spent(fs_world: World) -> None:
    """A PUT without a chunked body was refused (411), and its ticket was marked used
    already: the same upload sent right with it was refused TICKET_USED (403)."""
    (reply,) = await _tickets(
        fs_world,
        fs_world.keys["editor"],
        _upload_ticket(fs_world, "spent/obj.bin", len(SMALL), presigned=False),
    )
    target = f"/v1/transfers/{reply.ticket.ticket}"
    plain = f"PUT {target} HTTP/1.1\r\nContent-Length: {len(SMALL)}\r\n\r\n".encode() + SMALL
    assert await asyncio.to_thread(_exchange, reply.ticket.port, plain) == 411
    digest = hashlib.sha256(SMALL).hexdigest()
    chunked = (
        (
            f"PUT {target} HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
            f"{len(SMALL):x}\r\n"
        ).encode()
        + SMALL
        + f"\r\n0\r\nX-Cairn-Sha256: {digest}\r\n\r\n".encode()
    )
    assert await asyncio.to_thread(_exchange, reply.ticket.port, chunked) == 200
    assert await asyncio.to_thread(_exchange, reply.ticket.port, chunked) == 403  # spent now
    async with _artifacts(fs_world, fs_world.keys["viewer"]) as artifacts:
        assert (await artifacts.stat("spent/obj.bin")).sha256 == digest
