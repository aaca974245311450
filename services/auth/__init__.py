"""The auth service: `cairn.auth.v1.AuthService`, and the gate every call passes.

Every Cairn server hosts it next to the services it serves (see `catalog.select`),
because its gate is what admits calls to all of them.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from cairn.auth.v1 import auth_service_pb2, auth_service_pb2_grpc

from ..common.access import Gate, role_table
from ..common.service import Resources, ServiceSpec
from .cache import key_cache
from .gate import ApiKeyGate, OpenGate
from .servicer import AuthServicer
from .store import AuthStore


def _register(server: grpc.aio.Server, resources: Resources) -> None:
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(resources), server)


def _gate(resources: Resources) -> Gate:
    store = AuthStore(resources.pool)
    if resources.config.auth == "none":
        return OpenGate(store)
    return ApiKeyGate(store, key_cache(resources.pool), resources.config)


# Key methods are open to every caller for their own keys; the servicer checks the rest.
ROLES = role_table(
    authenticated=["GetProjects", "CreateApiKey", "GetApiKeys", "DeleteApiKey"],
    viewer=["GetProject"],
    editor=["UpdateProject"],
    admin=["AddUserProjectRole", "DeleteProjectRole", "GetProjectMembers"],
    global_admin=["CreateProject"],
)

SPEC = ServiceSpec(
    name="auth",
    full_name=auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name,
    schema="auth",
    migrations_dir=Path(__file__).parent / "migrations",
    register=_register,
    roles=ROLES,
    gate=_gate,
    records_requests=True,
    # Its answer holds a secret, never stored: a repeat revokes and makes anew.
    not_recorded=frozenset({"CreateApiKey"}),
)
