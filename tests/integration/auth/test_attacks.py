"""Brute force is rate limited per address and logged; keys never reach a log line."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from typing import Any

import asyncpg
import grpc
import pytest
import structlog
from google.protobuf.internal import encoder
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

import cairn
from cairn.artifacts.v1 import artifacts_service_pb2, artifacts_service_pb2_grpc
from cairn.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from cairn.exceptions import (
    InvalidArgumentError,
    ResourceExhaustedError,
    UnauthenticatedError,
    from_grpc_error,
)
from cairn.registry.v1 import registry_pb2, registry_service_pb2, registry_service_pb2_grpc
from cairn.types import ApiKeyExpirationTime
from cairn_server import catalog
from cairn_server.auth.store import AuthStore
from cairn_server.common import admission, messages, wire
from cairn_server.common.config import Config
from cairn_server.common.peers import counted_address
from cairn_server.common.server import CairnServer
from tests.conftest import with_overrides
from tests.integration.auth.conftest import World, serve

GUESS = "cairn_0123456789ab_" + "g" * 43


async def test_an_address_failing_too_often_is_refused_even_with_a_valid_key(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    invalid_before = _sample("cairn_auth_failures_total", reason="API_KEY_INVALID")
    refused_before = _sample("cairn_auth_refusals_total")
    limited = with_overrides(config, auth="api_key", auth_failure_limit=3)
    server, port = await serve(limited, pool)
    key, _ = await AuthStore(pool).create_key(f"u-{unique}", "k", None, global_admin=True)
    try:
        with capture_logs() as logged:
            async with cairn.AuthClient.insecure_connection("127.0.0.1", port, GUESS) as guesser:
                for _ in range(3):
                    with pytest.raises(UnauthenticatedError):
                        await guesser.get_projects()
                with pytest.raises(ResourceExhaustedError) as raised:
                    await guesser.get_projects()
            assert raised.value.reason == "TOO_MANY_FAILED_ATTEMPTS"
            async with cairn.AuthClient.insecure_connection("127.0.0.1", port, key) as holder:
                with pytest.raises(ResourceExhaustedError):
                    await holder.get_projects()
    finally:
        await server.stop(grace=0)
    failures = [e for e in logged if e["event"] == "authentication failed"]
    assert [e["failures"] for e in failures] == [1, 2, 3]
    assert {e["address"] for e in failures} == {"127.0.0.1"}
    assert {e["key_prefix"] for e in failures} == {"0123456789ab"}
    assert sum(e["event"] == "authentication refused" for e in logged) == 2
    assert _sample("cairn_auth_failures_total", reason="API_KEY_INVALID") == invalid_before + 3
    assert _sample("cairn_auth_refusals_total") == refused_before + 2


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
async def test_an_ipv6_peer_is_counted_by_its_address(config: Config, pool: asyncpg.Pool) -> None:
    # gRPC reports the peer as "ipv6:%5B::1%5D:port", brackets percent-encoded: the
    # address must still parse, or its /64 grouping never applies.
    server = CairnServer(
        with_overrides(config, auth="api_key", auth_failure_limit=2), catalog.select([]), pool
    )
    port = await server.start("[::1]:0")
    try:
        with capture_logs() as logged:
            async with cairn.AuthClient.insecure_connection(
                f"[::1]:{port}", None, GUESS
            ) as guesser:
                for _ in range(2):
                    with pytest.raises(UnauthenticatedError):
                        await guesser.get_projects()
                with pytest.raises(ResourceExhaustedError):
                    await guesser.get_projects()
    finally:
        await server.stop(grace=0)
    failures = [e for e in logged if e["event"] == "authentication failed"]
    assert [e["address"] for e in failures] == ["::1", "::1"]
    assert counted_address(failures[0]["address"]) == "::/64"  # grouped, not as it came


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_no_log_line_holds_a_key(config: Config, pool: asyncpg.Pool, unique: str) -> None:
    server, port = await serve(with_overrides(config, auth="api_key"), pool)
    key, info = await AuthStore(pool).create_key(f"l-{unique}", "k", None, global_admin=True)
    try:
        with capture_logs([structlog.contextvars.merge_contextvars]) as logged:
            async with cairn.AuthClient.insecure_connection("127.0.0.1", port, key) as auth:
                await auth.get_projects()
                await auth.create_api_key("another", cairn.types.ApiKeyExpirationTime.NEVER)
            async with cairn.AuthClient.insecure_connection("127.0.0.1", port, key + "x") as bad:
                with pytest.raises(UnauthenticatedError):
                    await bad.get_projects()
    finally:
        await server.stop(grace=0)
    text = repr(logged)
    assert key not in text
    # Exactly the secret: its alphabet holds "_", so splitting at the last one would not do.
    secret = key.removeprefix(f"cairn_{info.prefix}_")
    assert len(secret) == 43 and secret not in text and secret[:20] not in text
    calls = [e for e in logged if e["event"] == "rpc" and e["code"] == "OK"]
    assert calls and all(e["key_prefix"] == info.prefix for e in calls)
    assert all(e["user"] == f"l-{unique}" for e in calls)


async def test_a_request_is_read_through_only_once_its_caller_is_admitted(world: World) -> None:
    # Reading every element of a large request costs the event loop every call shares:
    # a stranger's 1.4 MB request held it 11.5 s before being told it had no key. Who
    # calls is now settled first, on the project field alone.
    request = registry_service_pb2.CreateRegisteredModelRequest(
        registered_model=registry_pb2.RegisteredModel(
            project=world.project,
            name="m",
            latest_versions=[registry_pb2.ModelVersion()] * (messages.MAX_ELEMENTS + 1),
        )
    )
    outcomes = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{world.port}") as channel:
        stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        for who, key in (("no key", ""), ("a guess", GUESS), ("viewer", world.keys["viewer"])):
            metadata = (("authorization", f"Bearer {key}"),) if key else ()
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.CreateRegisteredModel(request, metadata=metadata)
            outcomes[who] = raised.value.code()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.CreateRegisteredModel(
                request, metadata=(("authorization", f"Bearer {world.keys['editor']}"),)
            )
    assert outcomes == {
        "no key": grpc.StatusCode.UNAUTHENTICATED,
        "a guess": grpc.StatusCode.UNAUTHENTICATED,
        "viewer": grpc.StatusCode.PERMISSION_DENIED,
    }
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "registered_model.latest_versions: must hold at most" in raised.value.details()


async def test_another_callers_request_id_gets_nothing_recorded_for_its_owner(
    world: World,
) -> None:
    # A write's recorded answer is found by its request id: replayed by someone else
    # with the same request, it answered OK where that caller is refused. Under the id,
    # their call is their own, refused as without it.
    async with world.auth("viewer") as viewer:
        spare = await viewer.create_api_key("spare", ApiKeyExpirationTime.THIRTY_DAYS)
    request = auth_service_pb2.DeleteApiKeyRequest(api_key=spare.split("_")[1])
    request_id = (("x-cairn-request-id", f"revoke-{request.api_key}"),)
    owner = (("authorization", f"Bearer {world.keys['viewer']}"),)
    other = (("authorization", f"Bearer {world.keys['outsider']}"),)
    codes = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{world.port}") as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        await stub.DeleteApiKey(request, metadata=owner + request_id)
        await stub.DeleteApiKey(request, metadata=owner + request_id)  # the owner's retry
        for metadata in (other, other + request_id):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.DeleteApiKey(request, metadata=metadata)
            codes.append(raised.value.code())
    assert codes == [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.PERMISSION_DENIED]


async def test_a_stream_refused_for_its_caller_is_not_held_by_its_silence(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused stream reads what its client still sends before it answers, so the
    refusal does not overtake it. A client that sent its header, then nothing, and kept
    the stream open held the call for ever, as one that sent nothing at all did."""
    monkeypatch.setattr(messages, "REFUSED_DRAIN_SECONDS", 0.5)
    header = artifacts_service_pb2.UploadHeader(project=world.project, path="x", expected_size=1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{world.port}") as channel:
        stub = artifacts_service_pb2_grpc.ArtifactServiceStub(channel)
        held = [stub.Upload() for _ in range(20)]  # no key
        for call in held:
            await call.write(artifacts_service_pb2.UploadRequest(header=header))
        for call in held:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                async with asyncio.timeout(10):  # held for ever before
                    await call
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_stream_without_its_first_message_is_ended_soon(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client stream is admitted on its first message. Callers without a key that
    opened uploads and sent nothing held them, and the server's memory, for ever."""
    monkeypatch.setattr(admission, "FIRST_MESSAGE_SECONDS", 0.5)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{world.port}") as channel:
        stub = artifacts_service_pb2_grpc.ArtifactServiceStub(channel)
        held = [stub.Upload() for _ in range(20)]  # no key, no message
        for call in held:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                async with asyncio.timeout(10):  # held for ever before
                    await call
            error = from_grpc_error(raised.value)
            assert (error.code, error.reason) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "STREAM_STALLED",
            )


async def test_a_large_request_to_a_method_open_to_all_is_refused_uncounted(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Health and reflection take no key and requests of a few bytes, but a request of
    400 KB to them was counted all the same: 20 such Health/Check calls from a caller
    without a key held every other call 3.75 s."""
    counted: list[int] = []

    def counting(data: bytes, *rest: Any) -> None:
        counted.append(len(data))

    monkeypatch.setattr(wire, "check", counting)
    empty_fields = bytes([1 << 3 | 2, 0]) * 199_999  # field 1 (service, host), empty
    async with grpc.aio.insecure_channel(f"127.0.0.1:{world.port}") as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check", request_serializer=lambda raw: raw
        )
        reflect = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=lambda raw: raw,
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await check(empty_fields)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await reflect(iter([empty_fields])).read()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert counted == []


async def test_a_request_id_sent_again_with_another_key_creation_revokes_nothing(
    world: World,
) -> None:
    """A repeat of CreateApiKey (its answer lost) revokes the key nobody got. Another
    creation under the same id was taken for one too: it revoked a key in use, with
    every key made with it, where every other write answers REQUEST_ID_REUSED."""
    request_id = [("x-cairn-request-id", f"create-key-{world.project}")]
    async with world.auth("editor") as editor:
        first = await editor.create_api_key(
            "ci-deploy", ApiKeyExpirationTime.NINETY_DAYS, metadata=request_id
        )
        async with world.auth_with(first) as ci:
            child = await ci.create_api_key("ci-child", ApiKeyExpirationTime.THIRTY_DAYS)
        with pytest.raises(InvalidArgumentError) as reused:
            await editor.create_api_key(
                "laptop", ApiKeyExpirationTime.THIRTY_DAYS, metadata=request_id
            )
        assert reused.value.reason == "REQUEST_ID_REUSED"
        for key in (first, child):
            async with world.auth_with(key) as still:
                assert await still.get_api_keys()
        again = await editor.create_api_key(  # the true repeat still replaces the key
            "ci-deploy", ApiKeyExpirationTime.NINETY_DAYS, metadata=request_id
        )
    async with world.auth_with(first) as revoked:
        with pytest.raises(UnauthenticatedError):
            await revoked.get_api_keys()
    async with world.auth_with(again) as replacement:
        assert await replacement.get_api_keys()


async def test_a_key_creations_request_id_is_forgotten_after_the_retention(
    world: World, pool: asyncpg.Pool, config: Config
) -> None:
    """Every request id is forgotten after CAIRN_REQUEST_ID_RETENTION_SECONDS but a key
    creation's, kept on its key: a job creating its key under a fixed id each run
    revoked, weeks later, the key its previous run handed out and still used."""
    request_id = [("x-cairn-request-id", f"ci-key-{world.project}")]
    async with world.auth("editor") as editor:
        first = await editor.create_api_key(
            "ci", ApiKeyExpirationTime.NINETY_DAYS, metadata=request_id
        )
        older = config.request_id_retention_seconds + 60
        await pool.execute(
            """UPDATE auth.api_keys SET create_time = create_time - $3 * interval '1 second'
               WHERE user_id = $1 AND name = $2""",
            world.users["editor"],
            "ci",
            older,
        )
        second = await editor.create_api_key(
            "ci", ApiKeyExpirationTime.NINETY_DAYS, metadata=request_id
        )
    assert second != first
    for key in (first, second):  # both in use: neither revoked the other
        async with world.auth_with(key) as still:
            assert await still.get_api_keys()


async def test_a_request_of_countless_empty_messages_is_refused_before_it_is_decoded(
    world: World,
) -> None:
    """An empty model version is two bytes on the wire and about 240 bytes decoded: 8
    million of them in one 16 MiB request took 1.9 GB, before any check counted them
    and before its caller was authenticated (so with no key at all). Counted from the
    bytes, they are refused before anything is decoded (strings and numbers too:
    tests/unit/test_wire.py); a caller without a key, before they are counted."""
    versions = registry_pb2.RegisteredModel.DESCRIPTOR.fields_by_name["latest_versions"]
    model = bytes([versions.number << 3 | 2, 0]) * 1_000_000  # a million empty versions
    assert len(registry_pb2.RegisteredModel.FromString(model[:2000]).latest_versions) == 1000
    body = b"\x0a" + encoder._VarintBytes(len(model)) + model  # field 1: registered_model
    async with grpc.aio.insecure_channel(f"127.0.0.1:{world.port}") as channel:
        call = channel.unary_unary(
            "/cairn.registry.v1.RegistryService/CreateRegisteredModel",
            request_serializer=lambda raw: raw,
            response_deserializer=registry_service_pb2.CreateRegisteredModelResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(body)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        editor = (("authorization", f"Bearer {world.keys['editor']}"),)
        # An unknown group first, which the decoder keeps aside, is walked past too.
        for sent in (body, b"\x9b\x06\x9c\x06" + body):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(sent, metadata=editor)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (refused.value.details() or "").startswith(
                "registered_model.latest_versions: must hold at most 10000 elements"
            )


async def test_a_large_request_is_counted_only_once_its_caller_holds_a_key(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting a large request's fields from its bytes (wire.py) takes the loop every
    call shares about a microsecond a field: 200,000 empty fields in 400 KB took
    260 ms, and was spent for callers without a key, whom 20 such requests let hold
    every other call 1.5 to 4 s. Such a caller is now refused first; a stream's first
    message waits for its key as a unary request does."""
    counted: list[int] = []
    count = wire.check

    def counting(data: bytes, *rest: Any) -> None:
        counted.append(len(data))
        count(data, *rest)

    monkeypatch.setattr(wire, "check", counting)
    model = registry_service_pb2.CreateRegisteredModelRequest.DESCRIPTOR.fields_by_name
    body = bytes([model["registered_model"].number << 3 | 2, 0]) * 199_999
    header = artifacts_service_pb2.UploadRequest.DESCRIPTOR.fields_by_name["header"]
    first_message = bytes([header.number << 3 | 2, 0]) * 199_999
    async with grpc.aio.insecure_channel(f"127.0.0.1:{world.port}") as channel:
        create = channel.unary_unary(
            "/cairn.registry.v1.RegistryService/CreateRegisteredModel",
            request_serializer=lambda raw: raw,
        )
        upload = channel.stream_unary(
            "/cairn.artifacts.v1.ArtifactService/Upload", request_serializer=lambda raw: raw
        )
        for key in ("", GUESS):
            metadata = (("authorization", f"Bearer {key}"),) if key else ()
            for call in (
                create(body, metadata=metadata),
                upload(iter([first_message]), metadata=metadata),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert counted == []
        editor = (("authorization", f"Bearer {world.keys['editor']}"),)
        with pytest.raises(grpc.aio.AioRpcError):
            await create(body, metadata=editor)  # no name: refused once read
    assert counted == [len(body)]


async def test_a_compressed_call_is_refused_before_it_is_decoded(world: World) -> None:
    """gzip made the server decode gigabytes from a few MB a caller sent (150 calls of
    23 KB each decoded to 14 MB): no call is taken compressed, key or none."""
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{world.port}", compression=grpc.Compression.Gzip
    ) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "gzip" in (refused.value.details() or "")


async def _upload_until_finish(
    port: int, key: str, path: str
) -> tuple[grpc.aio.StreamStreamCall, bytes]:
    """An upload sent all but its finish, admitted as it began."""
    body = b"a" * 1000
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    upload = artifacts_service_pb2_grpc.ArtifactServiceStub(channel).Upload(
        metadata=(("authorization", f"Bearer {key}"),)
    )
    header = artifacts_service_pb2.UploadHeader(project="default", path=path, expected_size=1000)
    await upload.write(artifacts_service_pb2.UploadRequest(header=header))
    await upload.write(artifacts_service_pb2.UploadRequest(chunk=body))
    return upload, body


async def _finish(upload: grpc.aio.StreamStreamCall, body: bytes) -> Any:
    finish = artifacts_service_pb2.UploadFinish(sha256=hashlib.sha256(body).hexdigest())
    await upload.write(artifacts_service_pb2.UploadRequest(finish=finish))
    await upload.done_writing()
    return await upload


async def test_an_address_refused_for_failures_keeps_the_uploads_it_has_under_way(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    """An upload is admitted again as it publishes, presenting the key verified as it
    began: no guess. The address's failure limit applied to it, so a stranger's bad keys
    from the same address (a proxy all clients share) threw the upload away."""
    server, port = await serve(with_overrides(config, auth="api_key", auth_failure_limit=3), pool)
    key, _ = await AuthStore(pool).create_key(f"u-{unique}", "k", None, global_admin=True)
    try:
        upload, body = await _upload_until_finish(port, key, f"under-way-{unique}.bin")
        async with cairn.AuthClient.insecure_connection("127.0.0.1", port, GUESS) as guesser:
            for _ in range(3):
                with pytest.raises(UnauthenticatedError):
                    await guesser.get_projects()
            with pytest.raises(ResourceExhaustedError):  # the address is refused now
                await guesser.get_projects()
        stored = await _finish(upload, body)
    finally:
        await server.stop(grace=0)
    assert stored.object.size == len(body)


async def test_streams_whose_key_is_revoked_meanwhile_do_not_count_as_guesses(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    """Each was refused as it published, and counted as a failed guess of its address:
    a key revoked under a few uploads refused the address to everyone behind it."""
    server, port = await serve(with_overrides(config, auth="api_key", auth_failure_limit=3), pool)
    store = AuthStore(pool)
    key, info = await store.create_key(f"u-{unique}", "k", None, global_admin=True)
    other, _ = await store.create_key(f"o-{unique}", "k", None, global_admin=True)
    try:
        uploads = [await _upload_until_finish(port, key, f"revoked-{n}-{unique}") for n in range(4)]
        async with cairn.AuthClient.insecure_connection("127.0.0.1", port, other) as admin:
            await admin.delete_user_api_key(f"u-{unique}", info.prefix)
            for upload, body in uploads:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await _finish(upload, body)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert await admin.get_projects() is not None  # the address is not refused
    finally:
        await server.stop(grace=0)
