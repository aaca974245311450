"""Cairn: experiment tracking, a model registry and an artifact store over gRPC.

Connect to every service at once, or with one of the service clients::

    async with cairn.Client("http://127.0.0.1:50051") as client:
        await client.tracking.create_experiment("churn")

    async with cairn.TrackingClient.insecure_connection("127.0.0.1", 50051) as client:
        ...
"""

import os

# Before gRPC is imported, which reads it: its fork handlers, run in every child forked
# while calls are under way (a DataLoader's workers, multiprocessing's fork), killed
# some of them (SIGSEGV) before a line of their own ran. Cairn needs none of them: a
# child does not use its parent's clients (ForkedProcessError says so). Set it to
# "true" before importing cairn to keep gRPC's choice.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from . import exceptions, models, profiles, utils
from ._client import Client, create_client_from_profile, create_client_from_token
from ._clients.artifacts import ArtifactClient
from ._clients.auth import AuthClient
from ._clients.model_manager import ModelManager
from ._clients.operations import OperationsClient
from ._clients.registry import ModelRegistryAPIClient
from ._clients.tracking import TrackingClient
from ._clients.versioned_artifacts import ActiveArtifact
from .exceptions import CairnError

__all__ = [
    "ActiveArtifact",
    "ArtifactClient",
    "AuthClient",
    "CairnError",
    "Client",
    "ModelManager",
    "ModelRegistryAPIClient",
    "OperationsClient",
    "TrackingClient",
    "create_client_from_profile",
    "create_client_from_token",
    "exceptions",
    "models",
    "profiles",
    "utils",
]
