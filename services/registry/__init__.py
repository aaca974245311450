"""The registry service: `cairn.registry.v1.RegistryService`."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import grpc

from cairn.registry.v1 import registry_service_pb2, registry_service_pb2_grpc

from ..common.access import role_table
from ..common.config import Config
from ..common.paging import RESPONSE_RESERVE
from ..common.service import Resources, ServiceSpec, Unservable
from .servicer import REREADS, RegistryServicer
from .validation import LEAST_MESSAGE_BYTES, MAX_MODEL_ANSWER_BYTES
from .written import written_to


def _register(server: grpc.aio.Server, resources: Resources) -> None:
    registry_service_pb2_grpc.add_RegistryServiceServicer_to_server(
        RegistryServicer(resources), server
    )


async def _servable(pool: asyncpg.Pool, config: Config) -> None:
    """Refuses messages too small for the answer of a model within the registry's
    limits: such a model could be stored, and then neither read, found by name nor
    listed, with gRPC's RESOURCE_EXHAUSTED and no word of the setting."""
    if config.max_message_bytes < LEAST_MESSAGE_BYTES:
        raise Unservable(
            "the registry answers a model with its latest version of each stage, up to "
            f"{MAX_MODEL_ANSWER_BYTES} bytes within its limits (docs/registry.md), which "
            f"a response of CAIRN_MAX_MESSAGE_BYTES={config.max_message_bytes} cannot "
            f"carry beside {RESPONSE_RESERVE} bytes of framing and page token: serve the "
            f"registry with CAIRN_MAX_MESSAGE_BYTES of at least {LEAST_MESSAGE_BYTES}"
        )


ROLES = role_table(
    viewer=[
        "GetRegisteredModel",
        "FindRegisteredModel",
        "ListRegisteredModels",
        "GetModelVersion",
        "FindModelVersion",
        "ListModelVersions",
        "GetLatestModelVersions",
        "GetModelVersionDownloadUri",
        "GetArtifact",
        "FindArtifact",
        "ListArtifacts",
    ],
    editor=[
        "CreateRegisteredModel",
        "UpdateRegisteredModel",
        "RenameRegisteredModel",
        "DeleteRegisteredModel",
        "SetRegisteredModelTag",
        "DeleteRegisteredModelTag",
        "SetRegisteredModelAlias",
        "DeleteRegisteredModelAlias",
        "CreateModelVersion",
        "UpdateModelVersion",
        "DeleteModelVersion",
        "TransitionModelVersionStage",
        "SetModelVersionTag",
        "DeleteModelVersionTag",
        "CreateArtifact",
        "UpdateArtifact",
        "DeleteArtifact",
    ],
)

SPEC = ServiceSpec(
    name="registry",
    full_name=registry_service_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name,
    schema="registry",
    migrations_dir=Path(__file__).parent / "migrations",
    register=_register,
    roles=ROLES,
    records_requests=True,
    rereads=REREADS,
    written_to=written_to,
    servable=_servable,
)
