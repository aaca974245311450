"""Every RPC of every service, called as every kind of caller, against the role table.

For each call the expected outcome follows from the role the RPC declares and who
calls: UNAUTHENTICATED without a valid key, PERMISSION_DENIED without the role, and
otherwise past the gate (the handler then answers whatever the nearly empty request
deserves, but never UNAUTHENTICATED or PERMISSION_DENIED).
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor

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
    assert len(rpcs) == 23 + 28 + 7 + 9
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
