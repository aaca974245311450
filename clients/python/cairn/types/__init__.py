"""Plain Python types of the Cairn client; none of them is a protobuf message."""

from .._clients.run_operations import RunOperations
from ._artifacts import ObjectInfo, PresignedUrl
from ._auth import ApiKey, ApiKeyExpirationTime, Project, ProjectMember, ProjectRole
from ._journey import ManagedModel, ModelVersionLineage, VersionedArtifact
from ._operations import (
    Operation,
    OperationKind,
    OperationState,
)
from ._paging import ListOptions, OrderByField, PagedList, Pager
from ._registry import (
    ArtifactState,
    DocArtifact,
    MlflowModelVersion,
    ModelArtifact,
    ModelVersion,
    ModelVersionStage,
    ModelVersionState,
    RegisteredModel,
    RegisteredModelState,
)
from ._tracking import (
    Experiment,
    LifecycleStage,
    Metric,
    Param,
    Run,
    RunData,
    RunInfo,
    RunInput,
    RunStatus,
    RunTag,
    ViewType,
)

__all__ = [
    "ApiKey",
    "ApiKeyExpirationTime",
    "ArtifactState",
    "DocArtifact",
    "Experiment",
    "LifecycleStage",
    "ListOptions",
    "ManagedModel",
    "Metric",
    "MlflowModelVersion",
    "ModelArtifact",
    "ModelVersion",
    "ModelVersionLineage",
    "ModelVersionStage",
    "ModelVersionState",
    "ObjectInfo",
    "Operation",
    "OperationKind",
    "OperationState",
    "OrderByField",
    "PagedList",
    "Pager",
    "Param",
    "PresignedUrl",
    "Project",
    "ProjectMember",
    "ProjectRole",
    "RegisteredModel",
    "RegisteredModelState",
    "Run",
    "RunData",
    "RunInfo",
    "RunInput",
    "RunOperations",
    "RunStatus",
    "RunTag",
    "VersionedArtifact",
    "ViewType",
]
