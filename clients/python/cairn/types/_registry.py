"""Registry types, shaped as in Kubeflow Model Registry's client: `RegisteredModel("name")`
works, equality compares every field, times are milliseconds since the epoch."""

from __future__ import annotations

import enum
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from .._argument_error import invalid_argument
from .._numbers import is_bool, whole
from ..common.v1 import common_pb2
from ..registry.v1 import registry_pb2 as pb
from ._answers import known
from ._arguments import member, named, proto

PropertyValue = bool | int | float | str
T = TypeVar("T")


class RegisteredModelState(enum.StrEnum):
    LIVE = "LIVE"
    ARCHIVED = "ARCHIVED"

    @classmethod
    def _missing_(cls, value: object) -> RegisteredModelState | None:
        return named(cls, value)  # in any case, as stages: "archived"


ModelVersionState = RegisteredModelState


class ArtifactState(enum.StrEnum):
    UNKNOWN = "UNKNOWN"
    PENDING = "PENDING"
    LIVE = "LIVE"
    MARKED_FOR_DELETION = "MARKED_FOR_DELETION"
    DELETED = "DELETED"
    ABANDONED = "ABANDONED"
    REFERENCE = "REFERENCE"

    @classmethod
    def _missing_(cls, value: object) -> ArtifactState | None:
        return named(cls, value)


class ModelVersionStage(enum.StrEnum):
    """MLflow's stages; compares equal to "None", "Staging", "Production", "Archived"."""

    NONE = "None"
    STAGING = "Staging"
    PRODUCTION = "Production"
    ARCHIVED = "Archived"

    @classmethod
    def _missing_(cls, value: object) -> ModelVersionStage | None:
        # MLflow takes a stage in any case: "production", "STAGING"; Python's None
        # reads as the stage "None", as it always has here.
        return next((s for s in cls if s.value.lower() == str(value).lower()), None)


class _MlflowTimes:
    """MLflow's names for the times of a registered model or a version."""

    create_time_since_epoch: int | None
    last_update_time_since_epoch: int | None

    @property
    def creation_timestamp(self) -> int | None:
        """MLflow's name for create_time_since_epoch (milliseconds since the epoch)."""
        return self.create_time_since_epoch

    @property
    def last_updated_timestamp(self) -> int | None:
        """MLflow's name for last_update_time_since_epoch (milliseconds since the epoch)."""
        return self.last_update_time_since_epoch


@dataclass
class RegisteredModel(_MlflowTimes):
    name: str
    owner: str | None = None
    description: str | None = None
    external_id: str | None = None
    state: RegisteredModelState | str | None = RegisteredModelState.LIVE
    custom_properties: dict[str, PropertyValue] | None = None
    tags: dict[str, str] = field(default_factory=dict)
    id: str | None = None
    aliases: dict[str, int] = field(default_factory=dict)
    create_time_since_epoch: int | None = None
    last_update_time_since_epoch: int | None = None
    # MLflow's latest_versions: the highest version in each stage. Read only, and left
    # out of equality: it is a view of the versions, not a field of the model.
    latest_versions: list[MlflowModelVersion] = field(default_factory=list, compare=False)


@dataclass
class ModelVersion(_MlflowTimes):
    name: str
    author: str | None = None
    description: str | None = None
    external_id: str | None = None
    state: ModelVersionState | str | None = ModelVersionState.LIVE
    custom_properties: dict[str, PropertyValue] | None = None
    tags: dict[str, str] = field(default_factory=dict)
    source_run_id: str | None = None
    source_uri: str | None = None
    id: str | None = None
    registered_model_id: str | None = None
    version: int | None = None
    stage: ModelVersionStage = ModelVersionStage.NONE
    aliases: list[str] = field(default_factory=list)
    create_time_since_epoch: int | None = None
    last_update_time_since_epoch: int | None = None
    # The name of the model the version belongs to; read only, outside equality.
    registered_model_name: str | None = field(default=None, compare=False)

    # MLflow's names for the same facts.

    @property
    def run_id(self) -> str | None:
        """MLflow's name for source_run_id."""
        return self.source_run_id

    @property
    def source(self) -> str | None:
        """MLflow's name for source_uri."""
        return self.source_uri

    @property
    def current_stage(self) -> ModelVersionStage:
        """MLflow's name for stage."""
        return self.stage

    @property
    def user_id(self) -> str | None:
        """MLflow's user who created the version: the author, None when unset (as
        MLflow's store leaves it)."""
        return self.author or None

    @property
    def status_message(self) -> str | None:
        """MLflow's message for a failed registration: always None, as status is always
        "READY"."""
        return None

    @property
    def status(self) -> str:
        """MLflow's registration status: always "READY", since a version is stored
        whole by the call that creates it (MLflow's PENDING_REGISTRATION and
        FAILED_REGISTRATION never occur)."""
        return "READY"

    @property
    def run_link(self) -> str | None:
        """MLflow's run_link: the custom property "run_link", set by create_model_version."""
        value = (self.custom_properties or {}).get("run_link")
        return str(value) if value is not None else None


@dataclass
class MlflowModelVersion(ModelVersion):
    """A model version as MLflow's registry methods return it (`get_model_version`,
    `search_model_versions`, ...): `name` is the registered model's name, as in MLflow,
    and the version's own (Kubeflow) name is `version_name`. Handed to a Kubeflow method
    (`upsert_model_version`), `version_name` is the name it stores."""

    version_name: str = ""


@dataclass
class ModelArtifact:
    name: str
    uri: str | None = None
    description: str | None = None
    external_id: str | None = None
    model_format_name: str | None = None
    model_format_version: str | None = None
    storage_key: str | None = None
    storage_path: str | None = None
    service_account_name: str | None = None
    state: ArtifactState | str | None = ArtifactState.UNKNOWN
    custom_properties: dict[str, PropertyValue] | None = None
    id: str | None = None
    model_version_id: str | None = None
    create_time_since_epoch: int | None = None
    last_update_time_since_epoch: int | None = None


@dataclass
class DocArtifact:
    name: str
    uri: str | None = None
    description: str | None = None
    external_id: str | None = None
    state: ArtifactState | str | None = ArtifactState.UNKNOWN
    custom_properties: dict[str, PropertyValue] | None = None
    id: str | None = None
    model_version_id: str | None = None
    create_time_since_epoch: int | None = None
    last_update_time_since_epoch: int | None = None


Artifact = ModelArtifact | DocArtifact
_DETAILS = (
    "model_format_name",
    "model_format_version",
    "storage_key",
    "storage_path",
    "service_account_name",
)
_STAGE_WIRE = {
    ModelVersionStage.NONE: "STAGE_UNSPECIFIED",
    ModelVersionStage.STAGING: "STAGE_STAGING",
    ModelVersionStage.PRODUCTION: "STAGE_PRODUCTION",
    ModelVersionStage.ARCHIVED: "STAGE_ARCHIVED",
}
# Wire numbers -> members, for answers.
_STAGES = {pb.Stage.Value(wire): stage for stage, wire in _STAGE_WIRE.items()}
_STATES = {pb.State.Value("STATE_" + state): state for state in RegisteredModelState}
_ARTIFACT_STATES = {
    pb.ArtifactState.Value("ARTIFACT_STATE_" + state): state
    for state in ArtifactState
    if state != ArtifactState.UNKNOWN
}


def stage(value: str, argument: str = "stage") -> ModelVersionStage:
    """A stage from its name in any case ("production", "None", ...)."""
    return member(ModelVersionStage, value, argument)


def stage_to_proto(value: str, argument: str = "stage") -> str:
    return _STAGE_WIRE[stage(value, argument)]


def properties_to_proto(
    values: dict[str, PropertyValue] | None, argument: str = "custom_properties"
) -> dict[str, common_pb2.Value]:
    """Custom properties as the wire's values (None, none); numpy's scalars count as the
    Python numbers they stand for. Raises InvalidArgumentError naming the property, as
    argument['key'] (the server's form), of a key that is no string, a value of another
    type, or an integer past 64 bits."""
    return {
        _property_key(key, argument): _property(value, f"{argument}[{key!r}]")
        for key, value in (values or {}).items()
    }


def _property_key(key: Any, argument: str) -> str:
    if not isinstance(key, str):
        raise invalid_argument(argument, f"the key {key!r} is no string")
    return key


def _property(value: Any, field: str) -> common_pb2.Value:
    if is_bool(value):
        return common_pb2.Value(bool_value=bool(value))
    if isinstance(value, numbers.Integral):
        return common_pb2.Value(int_value=whole(value, field))
    if isinstance(value, numbers.Real):
        return common_pb2.Value(double_value=float(value))
    if isinstance(value, str):
        return common_pb2.Value(string_value=value)
    raise invalid_argument(field, f"must be bool, int, float or str, not {type(value).__name__}")


def properties_from_proto(values: Any) -> dict[str, PropertyValue]:
    return {
        key: getattr(v, v.WhichOneof("kind"))
        for key, v in sorted(values.items())
        if v.WhichOneof("kind")
    }


def _in_order(entries: Mapping[str, T]) -> dict[str, T]:
    """A map field's entries by key: protobuf keeps no order of a map's, so the same
    tags or aliases came in another order at each call (and in each CLI listing)."""
    return dict(sorted(entries.items()))


def registered_model_to_proto(model: RegisteredModel, project: str) -> pb.RegisteredModel:
    return proto(
        pb.RegisteredModel,
        project=project,
        id=model.id or "",
        name=model.name,
        description=model.description or "",
        owner=model.owner or "",
        state=_state_to_proto(model.state),
        external_id=model.external_id or "",
        custom_properties=properties_to_proto(model.custom_properties),
        tags=model.tags,
    )


def registered_model_from_proto(message: pb.RegisteredModel) -> RegisteredModel:
    return RegisteredModel(
        name=message.name,
        owner=message.owner or None,
        description=message.description or None,
        external_id=message.external_id or None,
        state=known(_STATES, message.state, "registered model state"),
        custom_properties=properties_from_proto(message.custom_properties),
        tags=_in_order(message.tags),
        id=message.id,
        aliases=_in_order(message.aliases),
        create_time_since_epoch=_ms(message.create_time),
        last_update_time_since_epoch=_ms(message.update_time),
        latest_versions=[mlflow_model_version_from_proto(v) for v in message.latest_versions],
    )


def model_version_to_proto(
    version: ModelVersion, project: str, registered_model_id: str
) -> pb.ModelVersion:
    return proto(
        pb.ModelVersion,
        project=project,
        id=version.id or "",
        registered_model_id=registered_model_id,
        name=version.version_name if isinstance(version, MlflowModelVersion) else version.name,
        author=version.author or "",
        description=version.description or "",
        state=_state_to_proto(version.state),
        stage=stage_to_proto(version.stage),
        source_run_id=version.source_run_id or "",
        source_uri=version.source_uri or "",
        external_id=version.external_id or "",
        custom_properties=properties_to_proto(version.custom_properties),
        tags=version.tags,
    )


def model_version_from_proto(message: pb.ModelVersion) -> ModelVersion:
    """Kubeflow's shape: `name` is the version's name."""
    return ModelVersion(name=message.name, **_version_fields(message))


def mlflow_model_version_from_proto(message: pb.ModelVersion) -> MlflowModelVersion:
    """MLflow's shape: `name` is the registered model's name."""
    return MlflowModelVersion(
        name=message.registered_model_name, version_name=message.name, **_version_fields(message)
    )


def _version_fields(message: pb.ModelVersion) -> dict[str, Any]:
    return dict(
        author=message.author or None,
        description=message.description or None,
        external_id=message.external_id or None,
        state=known(_STATES, message.state, "model version state"),
        custom_properties=properties_from_proto(message.custom_properties),
        tags=_in_order(message.tags),
        source_run_id=message.source_run_id or None,
        source_uri=message.source_uri or None,
        id=message.id,
        registered_model_id=message.registered_model_id,
        version=message.version,
        stage=known(_STAGES, message.stage, "model version stage"),
        aliases=list(message.aliases),
        create_time_since_epoch=_ms(message.create_time),
        last_update_time_since_epoch=_ms(message.update_time),
        registered_model_name=message.registered_model_name or None,
    )


def _state_to_proto(state: str | None) -> str:
    """A model's or version's state on the wire; None is unspecified: LIVE when made,
    as stored when updated (an upsert leaves it out)."""
    if state is None:
        return "STATE_UNSPECIFIED"
    return f"STATE_{member(RegisteredModelState, state, 'state').value}"


def _artifact_state_to_proto(state: str | None) -> str:
    """An artifact's state on the wire: Kubeflow's UNKNOWN is unspecified, as None is."""
    known = ArtifactState.UNKNOWN if state is None else member(ArtifactState, state, "state")
    if known is ArtifactState.UNKNOWN:
        return "ARTIFACT_STATE_UNSPECIFIED"
    return f"ARTIFACT_STATE_{known.value}"


def artifact_to_proto(
    artifact: Artifact, project: str, model_version_id: str | None
) -> pb.Artifact:
    message = proto(
        pb.Artifact,
        project=project,
        id=artifact.id or "",
        model_version_id=model_version_id or "",
        name=artifact.name,
        description=artifact.description or "",
        uri=artifact.uri or "",
        state=_artifact_state_to_proto(artifact.state),
        external_id=artifact.external_id or "",
        custom_properties=properties_to_proto(artifact.custom_properties),
    )
    if isinstance(artifact, ModelArtifact):
        message.model.CopyFrom(
            proto(
                pb.ModelArtifactDetails,
                **{name: getattr(artifact, name) or "" for name in _DETAILS},
            )
        )
    else:
        message.doc.SetInParent()
    return message


def artifact_from_proto(message: pb.Artifact) -> Artifact:
    common: dict[str, Any] = {
        "name": message.name,
        "uri": message.uri or None,  # unset, as Kubeflow's types read it
        "description": message.description or None,
        "external_id": message.external_id or None,
        # A state this client does not know is Kubeflow's UNKNOWN, as the unset one is.
        "state": _ARTIFACT_STATES.get(message.state, ArtifactState.UNKNOWN),
        "custom_properties": properties_from_proto(message.custom_properties),
        "id": message.id,
        "model_version_id": message.model_version_id or None,
        "create_time_since_epoch": _ms(message.create_time),
        "last_update_time_since_epoch": _ms(message.update_time),
    }
    if message.WhichOneof("kind") == "doc":
        return DocArtifact(**common)
    details: dict[str, Any] = {name: getattr(message.model, name) or None for name in _DETAILS}
    return ModelArtifact(**common, **details)


def _ms(stamp: Timestamp) -> int | None:
    return stamp.ToMilliseconds() if stamp.seconds or stamp.nanos else None
