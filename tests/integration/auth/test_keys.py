"""API keys: shown once, stored as a hash, listed, expiring, revoked at once."""

from __future__ import annotations

import asyncio
import io
import time

import asyncpg
import grpc
import pytest

import cairn
from cairn import sync
from cairn.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from cairn.exceptions import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from cairn.types import ApiKeyExpirationTime
from cairn_server.auth import keys as server_keys
from tests.integration.auth.conftest import World

DAY_MS = 86_400_000


async def _reason(client: cairn.TrackingClient) -> str | None:
    async with client:
        try:
            await client.search_experiments()
        except UnauthenticatedError as error:
            return error.reason
    return None


async def test_a_new_key_works_at_once_and_is_listed_without_its_secret(
    world: World, pool: asyncpg.Pool
) -> None:
    async with world.auth("editor") as auth:
        key = await auth.create_api_key("laptop", ApiKeyExpirationTime.THIRTY_DAYS)
        listed = {k.name: k for k in await auth.get_api_keys()}
    assert key.startswith("cairn_") and len(key) == len("cairn_") + 12 + 1 + 43
    assert await _reason(world.tracking("editor")) is None
    laptop = listed["laptop"]
    assert key.startswith(f"cairn_{laptop.prefix}_")
    assert key not in repr(listed)
    assert laptop.expire_time is not None
    assert abs(laptop.expire_time - (time.time() * 1000 + 30 * DAY_MS)) < 60_000
    stored = await pool.fetchrow("SELECT * FROM auth.api_keys WHERE prefix = $1", laptop.prefix)
    assert all(key not in str(value) for value in stored.values())


async def test_keys_are_listed_a_page_at_a_time_with_or_without_await(world: World) -> None:
    """list_user_api_keys is get_user_api_keys as a Pager (what `cairn keys list` prints
    page by page): the same keys in the same order, by `async for` and, through the
    sync facade, by `for`."""
    async with world.auth("editor") as auth:
        await auth.create_api_key("paged", ApiKeyExpirationTime.THIRTY_DAYS)
        every = [k.prefix for k in await auth.get_api_keys()]
        paged = [k.prefix async for k in auth.list_user_api_keys()]

    assert paged == every
    assert await _listed_without_await(world, "list_user_api_keys", "prefix") == every


async def test_projects_are_listed_a_page_at_a_time_with_or_without_await(world: World) -> None:
    """list_projects is get_projects as a Pager (what `cairn projects list` prints page
    by page), by `async for` and, through the sync facade, by `for`."""
    async with world.auth("editor") as auth:
        every = [p.name for p in await auth.get_projects()]
        paged = [p.name async for p in auth.list_projects()]

    assert paged == every == [world.project]
    assert await _listed_without_await(world, "list_projects", "name") == every


async def _listed_without_await(world: World, pager: str, field: str) -> list[str]:
    """The field of each item an editor's sync AuthClient's Pager method yields by `for`."""

    def listed() -> list[str]:
        key = world.keys["editor"]
        with sync.AuthClient.insecure_connection("127.0.0.1", world.port, key) as auth:
            return [getattr(item, field) for item in getattr(auth, pager)()]

    return await asyncio.to_thread(listed)


@pytest.mark.parametrize(
    ("choice", "days"),
    [
        (ApiKeyExpirationTime.NINETY_DAYS, 90),
        (ApiKeyExpirationTime.ONE_YEAR, 365),
        (ApiKeyExpirationTime.NEVER, None),
    ],
)
async def test_expiry_choices(world: World, choice: ApiKeyExpirationTime, days: int | None) -> None:
    # With a key that never expires: a key cannot make one that outlives it.
    async with world.auth("global_admin") as auth:
        await auth.create_api_key(f"k-{choice.name}", choice)
        listed = {k.name: k for k in await auth.get_api_keys()}
    expire_time = listed[f"k-{choice.name}"].expire_time
    if days is None:
        assert expire_time is None
    else:
        assert expire_time is not None
        assert abs(expire_time - (time.time() * 1000 + days * DAY_MS)) < 60_000


async def test_a_revoked_key_fails_on_the_next_call(world: World) -> None:
    async with world.auth("editor") as auth:
        key = await auth.create_api_key("short-lived", ApiKeyExpirationTime.NINETY_DAYS)
        client = cairn.TrackingClient.insecure_connection(
            "127.0.0.1", world.port, key, project=world.project
        )
        assert await _reason(client) is None
        await auth.delete_api_key(key.split("_")[1])  # by prefix
    assert (
        await _reason(
            cairn.TrackingClient.insecure_connection(
                "127.0.0.1", world.port, key, project=world.project
            )
        )
        == "API_KEY_REVOKED"
    )
    async with world.auth("editor") as auth:
        revoked = [k for k in await auth.get_api_keys() if k.name == "short-lived"]
    assert revoked[0].revoked


async def test_a_listing_shows_an_expired_key_as_expired(
    world: World, pool: asyncpg.Pool, unique: str
) -> None:
    """show_user_api_keys showed "revoked" for a revoked key and nothing for an expired
    one, which read as a key that works."""
    user = f"lapsed-{unique}"
    async with world.auth("global_admin") as admin:
        lapsed = await admin.create_user_api_key(user, "ci", ApiKeyExpirationTime.THIRTY_DAYS)
        await admin.create_user_api_key(user, "laptop", ApiKeyExpirationTime.THIRTY_DAYS)
        await pool.execute(
            "UPDATE auth.api_keys SET expire_time = now() - interval '1 second' WHERE prefix = $1",
            lapsed.split("_")[1],
        )
        shown = io.StringIO()
        await admin.show_user_api_keys(user, file=shown)
    cells = [[c.strip() for c in line.split("│")] for line in shown.getvalue().splitlines()]
    status = {row[2]: row[5] for row in cells if len(row) == 7}  # by name
    assert status == {"ci": "expired", "laptop": ""}


async def test_failures_say_why(world: World) -> None:
    assert await _reason(world.tracking("expired")) == "API_KEY_EXPIRED"
    assert await _reason(world.tracking("revoked")) == "API_KEY_REVOKED"
    for bad in ("nonsense", "cairn_0123456789ab_" + "y" * 43, world.keys["editor"] + "x"):
        client = cairn.TrackingClient.insecure_connection("127.0.0.1", world.port, bad)
        assert await _reason(client) == "API_KEY_INVALID"
    assert await _reason(cairn.TrackingClient.insecure_connection("127.0.0.1", world.port)) == (
        "API_KEY_MISSING"
    )


@pytest.mark.parametrize(
    "headers",
    [
        lambda key: [("authorization", f"Bearer {key}")],
        lambda key: [("authorization", f"bearer {key}")],
        lambda key: [("x-api-key", key)],
        lambda key: [("x-api-key", key), ("authorization", f"Bearer {key}")],
    ],
    ids=["bearer", "bearer-lowercase", "x-api-key", "both-agreeing"],
)
async def test_the_key_travels_as_bearer_or_x_api_key(world: World, headers) -> None:
    async with cairn.TrackingClient.insecure_connection(
        "127.0.0.1", world.port, project=world.project
    ) as client:
        found = await client.search_experiments(metadata=headers(world.keys["viewer"]))
    assert found == []


async def test_two_different_keys_are_refused(world: World) -> None:
    async with cairn.TrackingClient.insecure_connection(
        "127.0.0.1", world.port, world.keys["viewer"], project=world.project
    ) as client:
        with pytest.raises(UnauthenticatedError) as raised:
            await client.search_experiments(metadata=[("x-api-key", world.keys["editor"])])
    assert raised.value.reason == "API_KEY_INVALID"


async def test_only_global_admins_create_keys_for_others(world: World) -> None:
    async with world.auth("admin") as auth:
        with pytest.raises(PermissionDeniedError):
            await auth.create_user_api_key("someone", "x", ApiKeyExpirationTime.NEVER)
    async with world.auth("global_admin") as auth:
        key = await auth.create_user_api_key("someone-new", "x", ApiKeyExpirationTime.NEVER)
        assert [k.user_id for k in await auth.get_user_api_keys("someone-new")] == ["someone-new"]
    assert key.startswith("cairn_")


async def test_a_new_key_whose_random_prefix_is_taken_gets_another(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prefixes are random, so two keys may draw one (once in 2^48 per key there is):
    the creation answered INTERNAL, the insert breaking the prefix's uniqueness."""
    taken = world.keys["editor"].split("_")[1]
    drawn = iter([f"cairn_{taken}_" + "s" * 43])

    def taken_first() -> tuple[str, str]:
        key = next(drawn, None)
        return (key, taken) if key else generate()

    generate = server_keys.generate
    monkeypatch.setattr(server_keys, "generate", taken_first)
    async with world.auth("global_admin") as auth:
        key = await auth.create_user_api_key(world.users["viewer"], "x", ApiKeyExpirationTime.NEVER)
    assert key.split("_")[1] != taken and next(drawn, None) is None
    assert await _reason(world.tracking_with(key)) is None
    assert await _reason(world.tracking("editor")) is None  # the key that had it still works


async def test_global_admins_see_and_revoke_anybodys_keys(world: World) -> None:
    async with world.auth("global_admin") as auth:
        keys = await auth.get_user_api_keys(world.users["viewer"])
        assert [k.name for k in keys] == ["viewer"]
        await auth.delete_api_key(keys[0].prefix)
        with pytest.raises(NotFoundError) as raised:
            await auth.delete_api_key("0123456789ab")
    assert raised.value.reason == "API_KEY_NOT_FOUND"
    assert await _reason(world.tracking("viewer")) == "API_KEY_REVOKED"


async def test_others_neither_see_nor_revoke_keys(world: World) -> None:
    async with world.auth("outsider") as auth:
        with pytest.raises(PermissionDeniedError):
            await auth.get_user_api_keys(world.users["editor"])
        with pytest.raises(PermissionDeniedError):
            await auth.delete_api_key(world.keys["editor"])
        with pytest.raises(PermissionDeniedError):  # alike: no hint whether a key exists
            await auth.delete_api_key("0123456789ab")
    assert await _reason(world.tracking("editor")) is None


async def test_bad_key_requests_are_invalid(world: World) -> None:
    async with world.auth("editor") as auth:
        with pytest.raises(InvalidArgumentError):
            await auth.create_api_key("", ApiKeyExpirationTime.NEVER)
        with pytest.raises(InvalidArgumentError):
            await auth.delete_api_key("neither a key nor a prefix")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{world.port}") as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.CreateApiKey(  # no expiration: not one of the fixed choices
                auth_service_pb2.CreateApiKeyRequest(name="n"),
                metadata=[("authorization", f"Bearer {world.keys['editor']}")],
            )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_empty_bearer_is_missing_not_a_crash(world: World) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{world.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await auth_service_pb2_grpc.AuthServiceStub(channel).GetProjects(
                auth_service_pb2.GetProjectsRequest(), metadata=[("authorization", "Bearer ")]
            )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_empty_upload_stream_is_still_admitted_first(world: World) -> None:
    # The gate admits a client stream on its first message, or at its end when it has
    # none: a stream without messages must not slip past it.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{world.port}") as channel:
        upload = channel.stream_unary(
            "/cairn.artifacts.v1.ArtifactService/Upload",
            request_serializer=lambda m: m.SerializeToString(),
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await upload(iter([]), timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("as_admin", [False, True])
async def test_a_whole_key_given_with_another_secret_revokes_nothing(
    world: World, as_admin: bool
) -> None:
    """Only the prefix of a whole key was read: a key mistyped in its secret (or one
    stale, of a prefix reused) revoked the live key, and every key made with it. It is
    refused as a key nobody has: NOT_FOUND to an admin, PERMISSION_DENIED to others."""

    async def kept(auth: cairn.AuthClient) -> bool:
        return not next(k for k in await auth.get_api_keys() if k.name == "kept").revoked

    async with world.auth("editor") as auth:
        key = await auth.create_api_key("kept", ApiKeyExpirationTime.NINETY_DAYS)
        mistyped = key[:-3] + ("xyz" if not key.endswith("xyz") else "abc")
        if as_admin:
            async with world.auth("global_admin") as admin:
                with pytest.raises(NotFoundError) as refused:
                    await admin.delete_user_api_key(world.users["editor"], mistyped)
            assert refused.value.reason == "API_KEY_NOT_FOUND"
        else:
            with pytest.raises(PermissionDeniedError):
                await auth.delete_api_key(mistyped)
        assert await kept(auth)
        await auth.delete_api_key(key)  # the key itself, whole
        assert not await kept(auth)
