"""gRPC servicer of the registry: validates, converts, calls the stores."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf.message import Message

from cairn.common.v1 import common_pb2
from cairn.registry.v1 import registry_pb2 as pb
from cairn.registry.v1 import registry_service_pb2 as api
from cairn.registry.v1 import registry_service_pb2_grpc

from ..common import answers, paging
from ..common import validation as common
from ..common.errors import InvalidArgument, NotFound, invalid_field
from ..common.idempotency import Reread
from ..common.service import Resources
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
from .store import artifacts, models, versions

Context: TypeAlias = grpc.aio.ServicerContext
M = TypeVar("M", bound=Message)
T = TypeVar("T")
R = TypeVar("R", bound=Message)
DEFAULT_PAGE_SIZE = 20  # as Kubeflow Model Registry
MAX_PAGE_SIZE = 1000
# What a lookup of each kind answers when nothing can match it (_sought).
_MODEL = ("REGISTERED_MODEL_NOT_FOUND", "registered model")
_VERSION = ("MODEL_VERSION_NOT_FOUND", "model version")
_ARTIFACT = ("ARTIFACT_NOT_FOUND", "artifact")
# GetLatestModelVersions' stages: four exist; room for a caller's repeats.
MAX_STAGE_ENTRIES = 4 * len(Stage)
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


class RegistryServicer(registry_service_pb2_grpc.RegistryServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self._models = models.ModelStore(resources.pool)
        self._versions = versions.VersionStore(resources.pool)
        self._artifacts = artifacts.ArtifactStore(resources.pool)
        self._page_bytes = resources.config.max_message_bytes - paging.RESPONSE_RESERVE

    async def _answer(
        self,
        page: paging.ListPage[T],
        to_message: Callable[[T], M],
        entries: Callable[[T], int],
        respond: Callable[[list[M], str], R],
    ) -> R:
        """The answer of a page: its items converted, cut to fit one response, and
        respond(messages, next_page_token), built off the event loop when the page holds
        many entries (common/answers.py)."""

        def build() -> R:
            return respond(*paging.fitted(page, to_message, self._page_bytes))

        return await answers.built(sum(map(entries, page.items)), build)

    # Registered models

    async def CreateRegisteredModel(
        self, request: api.CreateRegisteredModelRequest, context: Context
    ) -> api.CreateRegisteredModelResponse:
        model = _registered_model(request.registered_model)
        validation.object_size(model.custom_properties, model.tags, "registered_model")
        record = await self._models.create(model)
        return api.CreateRegisteredModelResponse(registered_model=convert.registered_model(record))

    async def GetRegisteredModel(
        self, request: api.GetRegisteredModelRequest, context: Context
    ) -> api.GetRegisteredModelResponse:
        record = await self._models.get(
            common.project(request.project), validation.entity_id(request.id, "id")
        )
        return api.GetRegisteredModelResponse(registered_model=convert.registered_model(record))

    async def FindRegisteredModel(
        self, request: api.FindRegisteredModelRequest, context: Context
    ) -> api.FindRegisteredModelResponse:
        project = common.project(request.project)
        key = request.WhichOneof("key")
        if key == "name":
            record = await self._models.find(project, name=_sought(request.name, "name", *_MODEL))
        elif key == "external_id":
            record = await self._models.find(
                project, external_id=_sought(request.external_id, "external_id", *_MODEL)
            )
        else:
            raise invalid_field("key", "give a name or an external_id")
        return api.FindRegisteredModelResponse(registered_model=convert.registered_model(record))

    async def ListRegisteredModels(
        self, request: api.ListRegisteredModelsRequest, context: Context
    ) -> api.ListRegisteredModelsResponse:
        page = await self._models.list_page(
            common.project(request.project),
            request.filter,
            request.order_by,
            _page_size(request.page_size),
            request.page_token,
        )
        return await self._answer(
            page,
            convert.registered_model,
            convert.model_entries,
            lambda items, token: api.ListRegisteredModelsResponse(
                registered_models=items, next_page_token=token
            ),
        )

    async def UpdateRegisteredModel(
        self, request: api.UpdateRegisteredModelRequest, context: Context
    ) -> api.UpdateRegisteredModelResponse:
        message = _named_only(request.registered_model, request.update_mask.paths, models.UPDATABLE)
        record = _registered_model(message, require_name=False, creating=False)
        changes = _changes(record, request.update_mask.paths, (*models.UPDATABLE, "name"))
        updated = await self._models.update(
            record.project, validation.entity_id(message.id, "registered_model.id"), changes
        )
        return api.UpdateRegisteredModelResponse(registered_model=convert.registered_model(updated))

    async def RenameRegisteredModel(
        self, request: api.RenameRegisteredModelRequest, context: Context
    ) -> api.RenameRegisteredModelResponse:
        model_id, name = _model_key(request.id, request.name)
        record = await self._models.rename(
            common.project(request.project),
            model_id,
            validation.new_model_name(request.new_name, "new_name"),
            name=name,
        )
        return api.RenameRegisteredModelResponse(registered_model=convert.registered_model(record))

    async def DeleteRegisteredModel(
        self, request: api.DeleteRegisteredModelRequest, context: Context
    ) -> api.DeleteRegisteredModelResponse:
        model_id, name = _model_key(request.id, request.name)
        await self._models.delete(common.project(request.project), model_id, name=name)
        return api.DeleteRegisteredModelResponse()

    async def SetRegisteredModelTag(
        self, request: api.SetRegisteredModelTagRequest, context: Context
    ) -> api.SetRegisteredModelTagResponse:
        tag = validation.tags({request.key: request.value}, "tag")
        await self._models.set_tag(
            common.project(request.project),
            validation.entity_id(request.registered_model_id, "registered_model_id"),
            request.key,
            tag[request.key],
        )
        return api.SetRegisteredModelTagResponse()

    async def DeleteRegisteredModelTag(
        self, request: api.DeleteRegisteredModelTagRequest, context: Context
    ) -> api.DeleteRegisteredModelTagResponse:
        await self._models.set_tag(
            common.project(request.project),
            validation.entity_id(request.registered_model_id, "registered_model_id"),
            validation.name(request.key, "key"),
            None,
        )
        return api.DeleteRegisteredModelTagResponse()

    async def SetRegisteredModelAlias(
        self, request: api.SetRegisteredModelAliasRequest, context: Context
    ) -> api.SetRegisteredModelAliasResponse:
        if request.version < 1:
            raise invalid_field("version", "must be a version number (1 or more)")
        await self._models.set_alias(
            common.project(request.project),
            validation.entity_id(request.registered_model_id, "registered_model_id"),
            validation.alias(request.alias),
            request.version,
        )
        return api.SetRegisteredModelAliasResponse()

    async def DeleteRegisteredModelAlias(
        self, request: api.DeleteRegisteredModelAliasRequest, context: Context
    ) -> api.DeleteRegisteredModelAliasResponse:
        await self._models.delete_alias(
            common.project(request.project),
            validation.entity_id(request.registered_model_id, "registered_model_id"),
            # As setting and finding one do: a name no alias can have is refused, where
            # deleting an alias the model lacks does nothing.
            validation.alias(request.alias),
        )
        return api.DeleteRegisteredModelAliasResponse()

    # Model versions

    async def CreateModelVersion(
        self, request: api.CreateModelVersionRequest, context: Context
    ) -> api.CreateModelVersionResponse:
        version = _model_version(request.model_version)
        validation.object_size(version.custom_properties, version.tags, "model_version")
        validation.own_files(version.source_uri, version.project, "model_version.source_uri")
        record = await self._versions.create(version)
        return api.CreateModelVersionResponse(model_version=convert.model_version(record))

    async def GetModelVersion(
        self, request: api.GetModelVersionRequest, context: Context
    ) -> api.GetModelVersionResponse:
        record = await self._versions.get(
            common.project(request.project), validation.entity_id(request.id, "id")
        )
        return api.GetModelVersionResponse(model_version=convert.model_version(record))

    async def FindModelVersion(
        self, request: api.FindModelVersionRequest, context: Context
    ) -> api.FindModelVersionResponse:
        project = common.project(request.project)
        key = request.WhichOneof("key")
        if key == "external_id":
            record = await self._versions.find(
                project, "", external_id=_sought(request.external_id, "external_id", *_VERSION)
            )
        elif key in ("name", "version", "alias"):
            model_id = validation.entity_id(request.registered_model_id, "registered_model_id")
            # Checked as setting one checks it: an empty alias was looked up as version 0
            # ("model version 0 not found"), one that cannot be set as absent.
            alias = validation.alias(request.alias) if key == "alias" else ""
            record = await self._versions.find(
                project, model_id, name=request.name, number=request.version, alias=alias
            )
        else:
            raise invalid_field("key", "give a name, version, alias or external_id")
        return api.FindModelVersionResponse(model_version=convert.model_version(record))

    async def ListModelVersions(
        self, request: api.ListModelVersionsRequest, context: Context
    ) -> api.ListModelVersionsResponse:
        model_id = request.registered_model_id
        page = await self._versions.list_page(
            common.project(request.project),
            validation.entity_id(model_id, "registered_model_id") if model_id else "",
            request.filter,
            request.order_by,
            _page_size(request.page_size),
            request.page_token,
        )
        return await self._answer(
            page,
            convert.model_version,
            convert.version_entries,
            lambda items, token: api.ListModelVersionsResponse(
                model_versions=items, next_page_token=token
            ),
        )

    async def UpdateModelVersion(
        self, request: api.UpdateModelVersionRequest, context: Context
    ) -> api.UpdateModelVersionResponse:
        message = _named_only(request.model_version, request.update_mask.paths, versions.UPDATABLE)
        record = _model_version(message, require_model=False, creating=False)
        changes = _changes(record, request.update_mask.paths, (*versions.UPDATABLE, "name"))
        if record.registered_model_id:  # never changes: given, it must be as stored
            changes["registered_model_id"] = record.registered_model_id
        updated = await self._versions.update(
            record.project, validation.entity_id(message.id, "model_version.id"), changes
        )
        return api.UpdateModelVersionResponse(model_version=convert.model_version(updated))

    async def DeleteModelVersion(
        self, request: api.DeleteModelVersionRequest, context: Context
    ) -> api.DeleteModelVersionResponse:
        project = common.project(request.project)
        if request.id and (request.registered_model_name or request.version):
            raise invalid_field(
                "registered_model_name", "give its model's name and its number or its id, not both"
            )
        if request.id:
            await self._versions.delete(project, validation.entity_id(request.id, "id"))
        elif request.registered_model_name:
            name = _sought(request.registered_model_name, "registered_model_name", *_MODEL)
            await self._versions.delete_numbered(project, name, request.version)
        else:
            raise invalid_field(
                "registered_model_name", "give its model's name and its number, or its id"
            )
        return api.DeleteModelVersionResponse()

    async def TransitionModelVersionStage(
        self, request: api.TransitionModelVersionStageRequest, context: Context
    ) -> api.TransitionModelVersionStageResponse:
        stage = _stage(request.stage)
        _archiving_allowed(stage, request.archive_existing_versions)
        record = await self._versions.transition_stage(
            common.project(request.project),
            validation.entity_id(request.id, "id"),
            stage,
            request.archive_existing_versions,
        )
        return api.TransitionModelVersionStageResponse(model_version=convert.model_version(record))

    async def GetLatestModelVersions(
        self, request: api.GetLatestModelVersionsRequest, context: Context
    ) -> api.GetLatestModelVersionsResponse:
        records = await self._versions.latest(
            common.project(request.project),
            validation.entity_id(request.registered_model_id, "registered_model_id"),
            _stages(request.stages),
        )
        return api.GetLatestModelVersionsResponse(
            model_versions=[convert.model_version(v) for v in records]
        )

    async def SetModelVersionTag(
        self, request: api.SetModelVersionTagRequest, context: Context
    ) -> api.SetModelVersionTagResponse:
        tag = validation.tags({request.key: request.value}, "tag")
        await self._versions.set_tag(
            common.project(request.project),
            validation.entity_id(request.model_version_id, "model_version_id"),
            request.key,
            tag[request.key],
        )
        return api.SetModelVersionTagResponse()

    async def DeleteModelVersionTag(
        self, request: api.DeleteModelVersionTagRequest, context: Context
    ) -> api.DeleteModelVersionTagResponse:
        await self._versions.set_tag(
            common.project(request.project),
            validation.entity_id(request.model_version_id, "model_version_id"),
            validation.name(request.key, "key"),
            None,
        )
        return api.DeleteModelVersionTagResponse()

    async def GetModelVersionDownloadUri(
        self, request: api.GetModelVersionDownloadUriRequest, context: Context
    ) -> api.GetModelVersionDownloadUriResponse:
        uri = await self._versions.download_uri(
            common.project(request.project), validation.entity_id(request.id, "id")
        )
        return api.GetModelVersionDownloadUriResponse(uri=uri)

    # Artifacts

    async def CreateArtifact(
        self, request: api.CreateArtifactRequest, context: Context
    ) -> api.CreateArtifactResponse:
        artifact = _artifact(request.artifact)
        validation.object_size(artifact.custom_properties, {}, "artifact")
        validation.own_files(artifact.uri, artifact.project, "artifact.uri")
        if not request.new_version:
            record = await self._artifacts.create(artifact)
        elif artifact.model_version_id:
            raise invalid_field(
                "artifact.model_version_id",
                "must be empty with new_version: only standalone artifacts are versioned",
            )
        else:
            record = await self._artifacts.create_version(artifact)
        return api.CreateArtifactResponse(artifact=convert.artifact(record))

    async def GetArtifact(
        self, request: api.GetArtifactRequest, context: Context
    ) -> api.GetArtifactResponse:
        record = await self._artifacts.get(
            common.project(request.project), validation.entity_id(request.id, "id")
        )
        return api.GetArtifactResponse(artifact=convert.artifact(record))

    async def FindArtifact(
        self, request: api.FindArtifactRequest, context: Context
    ) -> api.FindArtifactResponse:
        project = common.project(request.project)
        key = request.WhichOneof("key")
        version = request.model_version_id
        if key == "external_id":
            record = await self._artifacts.find(
                project, external_id=_sought(request.external_id, "external_id", *_ARTIFACT)
            )
        elif key == "name":
            record = await self._artifacts.find(
                project,
                model_version_id=validation.entity_id(version, "model_version_id")
                if version
                else "",
                name=_sought(request.name, "name", *_ARTIFACT),
                version=_version_number(request.version),
            )
        else:
            raise invalid_field("key", "give a name or an external_id")
        return api.FindArtifactResponse(artifact=convert.artifact(record))

    async def ListArtifacts(
        self, request: api.ListArtifactsRequest, context: Context
    ) -> api.ListArtifactsResponse:
        version = request.model_version_id
        kind = {
            pb.ARTIFACT_KIND_MODEL: ArtifactKind.MODEL,
            pb.ARTIFACT_KIND_DOC: ArtifactKind.DOC,
        }.get(request.kind)
        page = await self._artifacts.list_page(
            common.project(request.project),
            validation.entity_id(version, "model_version_id") if version else "",
            kind,
            request.filter,
            request.order_by,
            _page_size(request.page_size),
            request.page_token,
        )
        return await self._answer(
            page,
            convert.artifact,
            convert.artifact_entries,
            lambda items, token: api.ListArtifactsResponse(artifacts=items, next_page_token=token),
        )

    async def UpdateArtifact(
        self, request: api.UpdateArtifactRequest, context: Context
    ) -> api.UpdateArtifactResponse:
        message = _named_only(request.artifact, request.update_mask.paths, artifacts.UPDATABLE)
        record = _artifact(message, require_name=False, creating=False)
        changes = _changes(record, request.update_mask.paths, artifacts.UPDATABLE, "model.")
        # What an artifact is and belongs to never changes; given, each must be as stored
        # (Kubeflow's upserts send them, unmasked), else its change would pass unsaid.
        changes |= {
            field: getattr(record, field)
            for field in ("name", "model_version_id")
            if getattr(record, field)
        }
        if message.WhichOneof("kind"):  # a message without one leaves the kind as stored
            changes["kind"] = record.kind
        updated = await self._artifacts.update(
            record.project, validation.entity_id(message.id, "artifact.id"), changes
        )
        return api.UpdateArtifactResponse(artifact=convert.artifact(updated))

    async def DeleteArtifact(
        self, request: api.DeleteArtifactRequest, context: Context
    ) -> api.DeleteArtifactResponse:
        await self._artifacts.delete(
            common.project(request.project), validation.entity_id(request.id, "id")
        )
        return api.DeleteArtifactResponse()


def _registered_model(
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


def _model_version(
    message: pb.ModelVersion, require_model: bool = True, creating: bool = True
) -> ModelVersion:
    """The version a request describes; tags as for _registered_model."""
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
        stage=_stage(message.stage),
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


def _artifact(message: pb.Artifact, require_name: bool = True, creating: bool = True) -> Artifact:
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


def _version_number(value: int) -> int:
    if value < 0:
        raise invalid_field("version", "must be 0 (the latest) or a version number")
    return value


def _detail(details: pb.ModelArtifactDetails, name: str) -> str:
    return validation.text(getattr(details, name), f"artifact.model.{name}")


# The fields of an artifact's ModelArtifactDetails (`model`) that an update may set.
_MODEL_DETAILS = {field.name for field in pb.ModelArtifactDetails.DESCRIPTOR.fields}


def _named_only(message: M, mask: Sequence[str], updatable: tuple[str, ...]) -> M:
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


def _changes(
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


def _stages(values: Sequence[int]) -> list[Stage]:
    """Each stage asked for, once. The entries are counted before they are read (there
    may be millions); a few repeats are harmless and read once."""
    validation.count(len(values), MAX_STAGE_ENTRIES, "stages", "entries")
    return [_stage(value) for value in dict.fromkeys(values)]


def _stage(value: int) -> Stage:
    if value not in Stage._value2member_map_:
        raise invalid_field("stage", f"unknown stage {value}")
    return Stage(value)


def _archiving_allowed(stage: Stage, archive_existing: bool) -> None:
    """MLflow refuses archive_existing_versions for a move to None or Archived: only the
    active stages have versions to archive, so the flag there is a caller's mistake."""
    if archive_existing and stage not in (Stage.STAGING, Stage.PRODUCTION):
        raise invalid_field(
            "archive_existing_versions",
            "archive_existing_versions applies to a transition to Staging or Production, "
            f"not to {stage.name.title()}",
        )


def _model_key(model_id: str, name: str) -> tuple[str, str]:
    """The model a write names: by id, or by name (MLflow's way), which the store matches
    as it writes, so that the model renamed or deleted meanwhile is not written."""
    if model_id and name:
        raise invalid_field("name", "give the model's name or its id, not both")
    if model_id:
        return validation.entity_id(model_id, "id"), ""
    if not name:
        raise invalid_field("name", "give the model's name, or its id")
    return "", _sought(name, "name", *_MODEL)


def _page_size(value: int) -> int:
    return paging.page_size(value, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _sought(value: str, field: str, reason: str, kind: str) -> str:
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
