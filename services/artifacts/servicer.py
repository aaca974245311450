"""gRPC servicer of the artifacts service: validates, converts, calls the store."""

from __future__ import annotations

from cairn.artifacts.v1 import artifacts_service_pb2_grpc

from ..common.service import Resources


class ArtifactServicer(artifacts_service_pb2_grpc.ArtifactServiceServicer):
    """RPCs not overridden here inherit the generated UNIMPLEMENTED answer."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources
