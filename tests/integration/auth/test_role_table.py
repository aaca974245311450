"""Every RPC of every service, called as every kind of caller, against the role table.

For each call the expected outcome follows from the role the RPC declares and who
calls: UNAUTHENTICATED without a valid key, PERMISSION_DENIED without the role, and
otherwise past the gate (the handler then answers whatever the nearly empty request
deserves, but never UNAUTHENTICATED or PERMISSION_DENIED).

Then what a table cannot say: the attempts to reach further than a role goes (another
user's keys, another project's roles, a key that outlives or survives its maker).
"""

from __future__ import annotations

from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor

import cairn
from cairn.auth.v1 import auth_pb2, auth_service_pb2, auth_service_pb2_grpc
from cairn.exceptions import InvalidArgumentError, PermissionDeniedError, UnauthenticatedError
from cairn.types import ApiKeyExpirationTime, ProjectRole
from cairn_server import catalog
from cairn_server.common.access import Role
from tests.integration.auth.conftest import World

PASSES = "passes the gate"
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
MALFORMED_KEY = "not-a-cairn-key"
UNKNOWN_KEY = "cairn_0123456789ab_" + "x" * 43

# The greatest role each caller holds in the project the requests name.
HOLDS: dict[str, Role | None] = {
    "viewer": Role.VIEWER,
    "editor": Role.EDITOR,
    "admin": Role.ADMIN,
    "outsider": Role.AUTHENTICATED,  # a valid key, but a member of another project
    "other_admin": Role.AUTHENTICATED,  # the admin of another project
    "global_admin": Role.GLOBAL_ADMIN,
}
CALLERS = ["no key", "malformed key", "unknown key", "expired", "revoked", *HOLDS]


def expected(caller: str, needed: Role) -> object:
    holds = HOLDS.get(caller)
    if holds is None:
        return UNAUTHENTICATED
    return PASSES if holds >= needed else DENIED


def every_rpc() -> list[tuple[MethodDescriptor, Role]]:
    rpcs = []
    for spec in catalog.select([]):
        service = descriptor_pool.Default().FindServiceByName(spec.full_name)
        rpcs += [(method, spec.roles[method.name]) for method in service.methods]
    return rpcs


def request_for(method: MethodDescriptor, project: str) -> Any:
    """A request naming the project and little else: in its own `project` field, or in
    that of the entity it carries (a registered model, an upload's header)."""
    request = message_factory.GetMessageClass(method.input_type)()
    if "project" in method.input_type.fields_by_name:
        request.project = project
    for field in method.input_type.fields:
        if field.message_type and "project" in field.message_type.fields_by_name:
            getattr(request, field.name).project = project
    return request


async def outcome(channel: grpc.aio.Channel, method: MethodDescriptor, request: Any, key: str):
    path = f"/{method.containing_service.full_name}/{method.name}"
    codec = {"request_serializer": type(request).SerializeToString}
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    try:
        if method.client_streaming:
            call = channel.stream_unary(path, **codec)(
                iter([request]), metadata=metadata, timeout=10
            )
            await call
        elif method.server_streaming:
            async for _ in channel.unary_stream(path, **codec)(
                request, metadata=metadata, timeout=10
            ):
                pass
        else:
            await channel.unary_unary(path, **codec)(request, metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as error:
        if error.code() in (UNAUTHENTICATED, DENIED):
            return error.code()
    return PASSES


def test_every_rpc_of_every_service_has_a_role() -> None:
    rpcs = every_rpc()
    assert len(rpcs) == 23 + 28 + 13 + 10 + 4  # tracking, registry, artifacts, auth, operations
    assert {role for _, role in rpcs} == set(Role)


@pytest.mark.parametrize("caller", CALLERS)
async def test_each_rpc_answers_each_caller_as_its_role_says(world: World, caller: str) -> None:
    fixed = {"no key": "", "malformed key": MALFORMED_KEY, "unknown key": UNKNOWN_KEY}
    key = fixed[caller] if caller in fixed else world.keys[caller]
    mismatches = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{world.port}") as channel:
        for method, needed in every_rpc():
            got = await outcome(channel, method, request_for(method, world.project), key)
            if got != expected(caller, needed):
                mismatches.append(f"{method.full_name} ({needed.name}): {got}")
    assert mismatches == []


# Escalation attempts.


def _prefix(key: str) -> str:
    return key.split("_")[1]


async def _refusal(client: cairn.TrackingClient) -> str | None:
    """The reason a key is refused with on its next call, None if it is admitted."""
    async with client:
        try:
            await client.search_experiments()
        except UnauthenticatedError as error:
            return error.reason
    return None


@pytest.mark.parametrize("target", ["viewer", "global_admin", "other_admin"])
async def test_a_project_admin_manages_no_keys_but_their_own(world: World, target: str) -> None:
    user = world.users[target]
    async with world.auth("admin") as admin:
        # Pulling the target into the admin's project first is what the admin can do.
        await admin.add_user_project_role(user, world.project, ProjectRole.VIEWER)
        with pytest.raises(PermissionDeniedError):
            await admin.get_user_api_keys(user)
        for key_or_prefix in (world.keys[target], _prefix(world.keys[target])):
            with pytest.raises(PermissionDeniedError):
                await admin.delete_api_key(key_or_prefix)
        with pytest.raises(PermissionDeniedError):
            await admin.create_user_api_key(user, "planted", ApiKeyExpirationTime.THIRTY_DAYS)
    assert await _refusal(world.tracking(target)) is None


async def test_a_project_admin_grants_roles_in_their_own_project_only(
    world: World, pool: asyncpg.Pool
) -> None:
    viewer, other_admin = world.users["viewer"], world.users["other_admin"]
    async with world.auth("admin") as admin:
        with pytest.raises(PermissionDeniedError):
            await admin.add_user_project_role(viewer, world.other_project, ProjectRole.ADMIN)
        with pytest.raises(PermissionDeniedError):
            await admin.delete_project_role(other_admin, world.other_project)
        with pytest.raises(PermissionDeniedError):
            await admin.get_project_members(world.other_project)
        await admin.add_user_project_role(other_admin, world.project, ProjectRole.ADMIN)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{world.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:  # a role beyond admin
            await auth_service_pb2_grpc.AuthServiceStub(channel).AddUserProjectRole(
                auth_service_pb2.AddUserProjectRoleRequest(
                    project=world.project,
                    user_id=viewer,
                    role=4,  # type: ignore[arg-type]
                ),
                metadata=[("authorization", f"Bearer {world.keys['admin']}")],
            )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    global_admins = await pool.fetch(
        "SELECT user_id FROM auth.users WHERE global_admin AND user_id = ANY($1)",
        list(world.users.values()),
    )
    assert [row["user_id"] for row in global_admins] == [world.users["global_admin"]]
    assert (
        await pool.fetchval(
            "SELECT role FROM auth.project_roles WHERE project = $1 AND user_id = $2",
            world.other_project,
            world.users["other_admin"],
        )
        == auth_pb2.PROJECT_ROLE_ADMIN
    )


@pytest.mark.parametrize("longer", [ApiKeyExpirationTime.ONE_YEAR, ApiKeyExpirationTime.NEVER])
async def test_a_key_cannot_make_a_key_that_outlives_it(
    world: World, longer: ApiKeyExpirationTime
) -> None:
    # The editor's key expires a year after the world was made: a moment ago.
    async with world.auth("editor") as editor:
        with pytest.raises(InvalidArgumentError) as raised:
            await editor.create_api_key("longer", longer)
        shorter = await editor.create_api_key("shorter", ApiKeyExpirationTime.NINETY_DAYS)
        names = [k.name for k in await editor.get_api_keys()]
    assert raised.value.reason == "API_KEY_OUTLIVES_PARENT"
    assert "longer" not in names and "shorter" in names
    assert await _refusal(world.tracking_with(shorter)) is None


async def test_revoking_a_key_revokes_the_keys_made_with_it(world: World) -> None:
    async with world.auth("editor") as editor:
        child = await editor.create_api_key("child", ApiKeyExpirationTime.NINETY_DAYS)
    async with world.auth_with(child) as auth:
        grandchild = await auth.create_api_key("grandchild", ApiKeyExpirationTime.THIRTY_DAYS)
    for key in (child, grandchild):  # admitted, and so cached
        assert await _refusal(world.tracking_with(key)) is None
    async with world.auth("editor") as auth:
        await auth.delete_api_key(world.keys["editor"])
    for key in (world.keys["editor"], child, grandchild):
        assert await _refusal(world.tracking_with(key)) == "API_KEY_REVOKED"
    async with world.auth("viewer") as viewer:  # another user's keys are untouched
        await viewer.get_api_keys()
