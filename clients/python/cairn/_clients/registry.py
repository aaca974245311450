"""`ModelRegistryAPIClient`: The model registry, shaped like Kubeflow Model Registry's client."""

from __future__ import annotations

from typing import Any

from .._base import BaseClient
from ..registry.v1 import registry_service_pb2_grpc


class ModelRegistryAPIClient(BaseClient):
    """Async client of `cairn.registry.v1.RegistryService`."""

    def _bind(self, channel: Any) -> None:
        self._stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
