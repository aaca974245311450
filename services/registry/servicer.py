"""gRPC servicer of the registry service: validates, converts, calls the store."""

from __future__ import annotations

from cairn.registry.v1 import registry_service_pb2_grpc

from ..common.service import Resources


class RegistryServicer(registry_service_pb2_grpc.RegistryServiceServicer):
    """RPCs not overridden here inherit the generated UNIMPLEMENTED answer."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources
