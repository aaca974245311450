"""gRPC servicer of the registry: validates, converts, calls the stores."""

from __future__ import annotations

from cairn.registry.v1 import registry_service_pb2_grpc

from ..common import paging
from ..common.idempotency import Reread
from ..common.service import Resources
from .artifact_calls import ArtifactCalls
from .model_calls import RegisteredModelCalls
from .store import artifacts, models, versions
from .tag_calls import TagAndAliasCalls
from .version_calls import ModelVersionCalls

# Writes answering an object whose tags, properties and latest versions their request
# does not bound (a create's, only by the largest message): how their repeat reads it
# again when their answer is too large for a request id to keep (common/idempotency.py).
_MODEL_READ = Reread("GetRegisteredModel", ("registered_model.project", "registered_model.id"))
_VERSION_READ = Reread("GetModelVersion", ("model_version.project", "model_version.id"))
_ARTIFACT_READ = Reread("GetArtifact", ("artifact.project", "artifact.id"))
REREADS = {
    "CreateRegisteredModel": _MODEL_READ,
    "UpdateRegisteredModel": _MODEL_READ,
    "RenameRegisteredModel": _MODEL_READ,
    "CreateModelVersion": _VERSION_READ,
    "UpdateModelVersion": _VERSION_READ,
    "TransitionModelVersionStage": _VERSION_READ,
    "CreateArtifact": _ARTIFACT_READ,
    "UpdateArtifact": _ARTIFACT_READ,
}


class RegistryServicer(
    RegisteredModelCalls,
    ModelVersionCalls,
    TagAndAliasCalls,
    ArtifactCalls,
    registry_service_pb2_grpc.RegistryServiceServicer,
):
    """The registry's calls, in mixins by what they serve: registered models
    (`model_calls.py`), model versions (`version_calls.py`), tags and aliases
    (`tag_calls.py`) and artifacts (`artifact_calls.py`); what they share in
    `registry_calls.py`, and how they read their requests' fields in `request_fields.py`;
    here, the stores they call."""

    def __init__(self, resources: Resources) -> None:
        self._models = models.ModelStore(resources.pool)
        self._versions = versions.VersionStore(resources.pool)
        self._artifacts = artifacts.ArtifactStore(resources.pool)
        self._page_bytes = resources.config.max_message_bytes - paging.RESPONSE_RESERVE
