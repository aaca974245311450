"""The registry service: `cairn.registry.v1.RegistryService`."""

from __future__ import annotations

from pathlib import Path

import grpc

from cairn.registry.v1 import registry_service_pb2, registry_service_pb2_grpc

from ..common.access import role_table
from ..common.service import Resources, ServiceSpec
from .servicer import REREADS, RegistryServicer


def _register(server: grpc.aio.Server, resources: Resources) -> None:
    registry_service_pb2_grpc.add_RegistryServiceServicer_to_server(
        RegistryServicer(resources), server
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
)
