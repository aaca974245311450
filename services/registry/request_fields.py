"""The fields of registry requests, read and checked as the stores take them: the
objects they describe, update masks, stages, the names a lookup seeks, page sizes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from google.protobuf.message import Message

from cairn.common.v1 import common_pb2
from cairn.registry.v1 import registry_pb2 as pb

from ..common import paging
from ..common import validation as common
from ..common.errors import InvalidArgument, NotFound, invalid_field
from . import convert, validation
from .model import (
    Artifact,
    ArtifactKind,
    ModelVersion,
    PropertyValue,
    RegisteredModel,
    Stage,
    State,
)

M = TypeVar("M", bound=Message)
DEFAULT_PAGE_SIZE = 20  # as Kubeflow Model Registry
MAX_PAGE_SIZE = 1000
# What a lookup of each kind answers when nothing can match it (sought).
MODEL = ("REGISTERED_MODEL_NOT_FOUND", "registered model")
VERSION = ("MODEL_VERSION_NOT_FOUND", "model version")
ARTIFACT = ("ARTIFACT_NOT_FOUND", "artifact")
# GetLatestModelVersions' stages: four exist; room for a caller's repeats.
MAX_STAGE_ENTRIES = 4 * len(Stage)


def registered_model(
    message: pb.RegisteredModel, require_name: bool = True, creating: bool = True
) -> RegisteredModel:
    """The model a request describes. Tags are set at creation and by SetTag only: an
    update neither reads nor checks them (a model read back with more tags than the
    limits allow today, stored before them, can be sent back with a change)."""
    return RegisteredModel(
        project=common.project(message.project, "registered_model.project"),
        name=_model_name(message.name, require_name, creating),
        description=validation.text(message.description, "registered_model.description"),
        owner=validation.text(message.owner, "registered_model.owner"),
        state=_state(message.state),
        external_id=validation.optional_name(message.external_id, "registered_model.external_id"),
        custom_properties=_properties(
            message.custom_properties, "registered_model.custom_properties"
        ),
        tags=validation.tags(message.tags, "registered_model.tags") if creating else {},
    )


def _model_name(value: str, require_name: bool, creating: bool) -> str:
    """A model's name as a create gives it, or as an update sends it back unchanged
    (one stored before today's rule of new names, too)."""
    if not (require_name or value):
        return ""
    if creating:
        return validation.new_model_name(value, "registered_model.name")
    return validation.name(value, "registered_model.name")


def model_version(
    message: pb.ModelVersion, require_model: bool = True, creating: bool = True
) -> ModelVersion:
    """The version a request describes; tags as for registered_model."""
    model_id = message.registered_model_id
    return ModelVersion(
        project=common.project(message.project, "model_version.project"),
        registered_model_id=validation.entity_id(model_id, "model_version.registered_model_id")
        if require_model or model_id
        else "",
        name=validation.optional_name(message.name, "model_version.name"),
        author=validation.text(message.author, "model_version.author"),
        description=validation.text(message.description, "model_version.description"),
        state=_state(message.state),
        stage=stage(message.stage),
        source_run_id=validation.source_run_id(
            message.source_run_id, "model_version.source_run_id"
        ),
        source_uri=(validation.uri if creating else validation.updated_uri)(
            message.source_uri, "model_version.source_uri"
        ),
        external_id=validation.optional_name(message.external_id, "model_version.external_id"),
        custom_properties=_properties(message.custom_properties, "model_version.custom_properties"),
        tags=validation.tags(message.tags, "model_version.tags") if creating else {},
    )


def artifact(message: pb.Artifact, require_name: bool = True, creating: bool = True) -> Artifact:
    details = message.model
    kind = ArtifactKind.DOC if message.WhichOneof("kind") == "doc" else ArtifactKind.MODEL
    version = message.model_version_id
    return Artifact(
        project=common.project(message.project, "artifact.project"),
        kind=kind,
        name=validation.name(message.name, "artifact.name") if require_name or message.name else "",
        model_version_id=validation.entity_id(version, "artifact.model_version_id")
        if version
        else "",
        description=validation.text(message.description, "artifact.description"),
        uri=(validation.uri if creating else validation.updated_uri)(message.uri, "artifact.uri"),
        state=int(message.state),
        external_id=validation.optional_name(message.external_id, "artifact.external_id"),
        custom_properties=_properties(message.custom_properties, "artifact.custom_properties"),
        model_format_name=_detail(details, "model_format_name"),
        model_format_version=_detail(details, "model_format_version"),
        storage_key=_detail(details, "storage_key"),
        storage_path=_detail(details, "storage_path"),
        service_account_name=_detail(details, "service_account_name"),
        # Not updatable: a type stored before today's rule, sent back unchanged, passes.
        type=(validation.artifact_type if creating else validation.optional_name)(
            message.type, "artifact.type"
        ),
        source_run_id=validation.source_run_id(message.source_run_id, "artifact.source_run_id"),
    )


def _properties(values: Mapping[str, common_pb2.Value], field: str) -> dict[str, PropertyValue]:
    # Counted before they are converted: converting a map of millions is the cost.
    validation.count(len(values), validation.MAX_PROPERTIES, field, "properties")
    return validation.properties(convert.properties_from_proto(values, field), field)


def version_number(value: int) -> int:
    if value < 0:
        raise invalid_field("version", "must be 0 (the latest) or a version number")
    return value


def _detail(details: pb.ModelArtifactDetails, name: str) -> str:
    return validation.text(getattr(details, name), f"artifact.model.{name}")


# The fields of an artifact's ModelArtifactDetails (`model`) that an update may set.
_MODEL_DETAILS = {field.name for field in pb.ModelArtifactDetails.DESCRIPTOR.fields}


def named_only(message: M, mask: Sequence[str], updatable: tuple[str, ...]) -> M:
    """A copy of message without the updatable fields its mask does not name, which an
    update neither reads nor checks: a value stored before today's checks, sent back as
    read (MLflow's update_model_version sends the whole version), holds up no change of
    another field. A path names a field of an artifact's `model` with or without
    "model." before it."""
    named = {path.removeprefix("model.") for path in mask}
    trimmed = type(message)()
    trimmed.CopyFrom(message)
    for field in updatable:
        if field in named:
            continue
        if field not in _MODEL_DETAILS:
            trimmed.ClearField(field)
        elif isinstance(trimmed, pb.Artifact) and trimmed.HasField("model"):
            trimmed.model.ClearField(field)
    return trimmed


def changes(
    record: Any, mask: Sequence[str], allowed: tuple[str, ...], prefix: str = ""
) -> dict[str, Any]:
    """The fields the mask names (each without prefix, if it has it) with record's values."""
    validation.count(len(mask), len(allowed), "update_mask.paths", "paths")
    paths = [p.removeprefix(prefix) for p in mask] if prefix else list(mask)
    unknown = [p for p in paths if p not in allowed]
    if unknown:
        raise invalid_field(
            "update_mask", f"cannot update {', '.join(unknown)}; updatable: {', '.join(allowed)}"
        )
    return {path: getattr(record, path) for path in paths}


def _state(value: int) -> State:
    return State.ARCHIVED if value == pb.STATE_ARCHIVED else State.LIVE


def stages(values: Sequence[int]) -> list[Stage]:
    """Each stage asked for, once. The entries are counted before they are read (there
    may be millions); a few repeats are harmless and read once."""
    validation.count(len(values), MAX_STAGE_ENTRIES, "stages", "entries")
    return [stage(value) for value in dict.fromkeys(values)]


def stage(value: int) -> Stage:
    if value not in Stage._value2member_map_:
        raise invalid_field("stage", f"unknown stage {value}")
    return Stage(value)


def archiving_allowed(stage: Stage, archive_existing: bool) -> None:
    """MLflow refuses archive_existing_versions for a move to None or Archived: only the
    active stages have versions to archive, so the flag there is a caller's mistake."""
    if archive_existing and stage not in (Stage.STAGING, Stage.PRODUCTION):
        raise invalid_field(
            "archive_existing_versions",
            "archive_existing_versions applies to a transition to Staging or Production, "
            f"not to {stage.name.title()}",
        )


def model_key(model_id: str, name: str) -> tuple[str, str]:
    """The model a write names: by id, or by name (MLflow's way), which the store matches
    as it writes, so that the model renamed or deleted meanwhile is not written."""
    if model_id and name:
        raise invalid_field("name", "give the model's name or its id, not both")
    if model_id:
        return validation.entity_id(model_id, "id"), ""
    if not name:
        raise invalid_field("name", "give the model's name, or its id")
    return "", sought(name, "name", *MODEL)


def page_size(value: int) -> int:
    return paging.page_size(value, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def sought(value: str, field: str, reason: str, kind: str) -> str:
    """A name or external id a lookup asks for. One no object can have (surrounding
    whitespace, too long) is absent, as MLflow's get_registered_model and Kubeflow's
    *_by_params answer it, not a bad request; an empty one names nothing to look for,
    which MLflow refuses too."""
    if not value:
        raise invalid_field(field, "must not be empty")
    try:
        return validation.name(value, field)
    except InvalidArgument as refused:
        raise NotFound(
            reason,
            f"no {kind} has this {field.replace('_', ' ')}: {refused.message}",
            metadata={field: value[: validation.MAX_NAME_LENGTH]},
        ) from None
