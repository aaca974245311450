"""gRPC servicer of the tracking service: validates, converts, calls the store."""

from __future__ import annotations

from cairn.tracking.v1 import tracking_service_pb2_grpc

from ..common.service import Resources


class TrackingServicer(tracking_service_pb2_grpc.TrackingServiceServicer):
    """RPCs not overridden here inherit the generated UNIMPLEMENTED answer."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources
