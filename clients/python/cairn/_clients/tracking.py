"""`TrackingClient`: Experiment tracking: experiments, runs, params, tags, metrics."""

from __future__ import annotations

from typing import Any

from .._base import BaseClient
from ..tracking.v1 import tracking_service_pb2_grpc


class TrackingClient(BaseClient):
    """Async client of `cairn.tracking.v1.TrackingService`."""

    def _bind(self, channel: Any) -> None:
        self._stub = tracking_service_pb2_grpc.TrackingServiceStub(channel)
