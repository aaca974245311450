"""Cairn: experiment tracking, a model registry and an artifact store over gRPC.

Connect with one of the async clients::

    async with cairn.TrackingClient.insecure_connection("127.0.0.1", 50051) as client:
        ...
"""

from . import exceptions, models
from ._clients.artifacts import ArtifactClient
from ._clients.auth import AuthClient
from ._clients.model_manager import ModelManager
from ._clients.registry import ModelRegistryAPIClient
from ._clients.tracking import TrackingClient
from ._clients.versioned_artifacts import ActiveArtifact
from .exceptions import CairnError

__all__ = [
    "ActiveArtifact",
    "ArtifactClient",
    "AuthClient",
    "CairnError",
    "ModelManager",
    "ModelRegistryAPIClient",
    "TrackingClient",
    "exceptions",
    "models",
]
