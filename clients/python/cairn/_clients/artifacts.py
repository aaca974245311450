"""`ArtifactClient`: Artifact storage: upload, download, list, delete."""

from __future__ import annotations

from typing import Any

from .._base import BaseClient
from ..artifacts.v1 import artifacts_service_pb2_grpc


class ArtifactClient(BaseClient):
    """Async client of `cairn.artifacts.v1.ArtifactService`."""

    def _bind(self, channel: Any) -> None:
        self._stub = artifacts_service_pb2_grpc.ArtifactServiceStub(channel)
