"""The registry service: `cairn.registry.v1.RegistryService`."""

from __future__ import annotations

from pathlib import Path

import grpc

from cairn.registry.v1 import registry_service_pb2, registry_service_pb2_grpc

from ..common.service import Resources, ServiceSpec
from .servicer import RegistryServicer


def _register(server: grpc.aio.Server, resources: Resources) -> None:
    registry_service_pb2_grpc.add_RegistryServiceServicer_to_server(
        RegistryServicer(resources), server
    )


SPEC = ServiceSpec(
    name="registry",
    full_name=registry_service_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name,
    schema="registry",
    migrations_dir=Path(__file__).parent / "migrations",
    register=_register,
)
