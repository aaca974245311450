"""The artifacts service: `cairn.artifacts.v1.ArtifactService`."""

from __future__ import annotations

from pathlib import Path

import grpc

from cairn.artifacts.v1 import artifacts_service_pb2, artifacts_service_pb2_grpc

from ..common.service import Resources, ServiceSpec
from .servicer import ArtifactServicer


def _register(server: grpc.aio.Server, resources: Resources) -> None:
    artifacts_service_pb2_grpc.add_ArtifactServiceServicer_to_server(
        ArtifactServicer(resources), server
    )


SPEC = ServiceSpec(
    name="artifacts",
    full_name=artifacts_service_pb2.DESCRIPTOR.services_by_name["ArtifactService"].full_name,
    schema="artifacts",
    migrations_dir=Path(__file__).parent / "migrations",
    register=_register,
)
