"""Conversions between cairn.registry.v1 messages and the store's plain records."""

from __future__ import annotations

from collections.abc import Mapping

from cairn.common.v1 import common_pb2
from cairn.registry.v1 import registry_pb2 as pb

from ..common import timestamps
from ..common.errors import invalid_field
from .model import (
    Artifact,
    ArtifactKind,
    ModelVersion,
    PropertyValue,
    RegisteredModel,
    Stage,
    State,
)

_STATES = {State.LIVE: "STATE_LIVE", State.ARCHIVED: "STATE_ARCHIVED"}
_STAGES = {
    Stage.NONE: "STAGE_UNSPECIFIED",
    Stage.STAGING: "STAGE_STAGING",
    Stage.PRODUCTION: "STAGE_PRODUCTION",
    Stage.ARCHIVED: "STAGE_ARCHIVED",
}


def properties_to_proto(values: Mapping[str, PropertyValue]) -> dict[str, common_pb2.Value]:
    converted = {}
    for key, value in values.items():
        if isinstance(value, bool):
            converted[key] = common_pb2.Value(bool_value=value)
        elif isinstance(value, int):
            converted[key] = common_pb2.Value(int_value=value)
        elif isinstance(value, float):
            converted[key] = common_pb2.Value(double_value=value)
        else:
            converted[key] = common_pb2.Value(string_value=value)
    return converted


def properties_from_proto(
    values: Mapping[str, common_pb2.Value], field: str
) -> dict[str, PropertyValue]:
    """Typed values. A Value with none of its fields set is refused naming it: taken, it
    was answered OK for a key never kept."""
    typed = {}
    for key, value in values.items():
        kind = value.WhichOneof("kind")
        if kind is None:
            raise invalid_field(
                f"{field}[{key!r}]",
                "holds no value: set bool_value, int_value, double_value or string_value",
            )
        typed[key] = getattr(value, kind)
    return typed


def model_entries(record: RegisteredModel) -> int:
    """How many tags, custom properties and aliases a model's message holds, its
    latest versions' included."""
    own = len(record.tags) + len(record.custom_properties) + len(record.aliases)
    return own + sum(map(version_entries, record.latest_versions))


def version_entries(record: ModelVersion) -> int:
    """How many tags, custom properties and aliases a version's message holds."""
    return len(record.tags) + len(record.custom_properties) + len(record.aliases)


def artifact_entries(record: Artifact) -> int:
    """How many custom properties an artifact's message holds."""
    return len(record.custom_properties)


def registered_model(record: RegisteredModel) -> pb.RegisteredModel:
    return pb.RegisteredModel(
        project=record.project,
        id=record.id,
        name=record.name,
        description=record.description,
        owner=record.owner,
        state=_STATES[record.state],
        external_id=record.external_id,
        custom_properties=properties_to_proto(record.custom_properties),
        tags=record.tags,
        aliases=record.aliases,
        create_time=timestamps.to_proto(record.create_time),
        update_time=timestamps.to_proto(record.update_time),
        latest_versions=[model_version(v) for v in record.latest_versions],
    )


def model_version(record: ModelVersion) -> pb.ModelVersion:
    return pb.ModelVersion(
        project=record.project,
        id=record.id,
        registered_model_id=record.registered_model_id,
        name=record.name,
        version=record.version,
        author=record.author,
        description=record.description,
        state=_STATES[record.state],
        stage=_STAGES[record.stage],
        source_run_id=record.source_run_id,
        source_uri=record.source_uri,
        external_id=record.external_id,
        custom_properties=properties_to_proto(record.custom_properties),
        tags=record.tags,
        aliases=record.aliases,
        create_time=timestamps.to_proto(record.create_time),
        update_time=timestamps.to_proto(record.update_time),
        registered_model_name=record.registered_model_name,
    )


def artifact(record: Artifact) -> pb.Artifact:
    message = pb.Artifact(
        project=record.project,
        id=record.id,
        model_version_id=record.model_version_id,
        name=record.name,
        description=record.description,
        uri=record.uri,
        state=record.state,  # type: ignore[arg-type]
        external_id=record.external_id,
        custom_properties=properties_to_proto(record.custom_properties),
        create_time=timestamps.to_proto(record.create_time),
        update_time=timestamps.to_proto(record.update_time),
        version=record.version,
        type=record.type,
        source_run_id=record.source_run_id,
    )
    if record.kind == ArtifactKind.MODEL:
        message.model.CopyFrom(
            pb.ModelArtifactDetails(
                model_format_name=record.model_format_name,
                model_format_version=record.model_format_version,
                storage_key=record.storage_key,
                storage_path=record.storage_path,
                service_account_name=record.service_account_name,
            )
        )
    else:
        message.doc.SetInParent()
    return message
