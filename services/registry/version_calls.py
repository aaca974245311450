"""Model versions' calls: create, get, find, list, update, delete, stages, download URI."""

from __future__ import annotations

from cairn.registry.v1 import registry_service_pb2 as api

from ..common import validation as common
from ..common.errors import invalid_field
from . import convert, request_fields, validation
from .registry_calls import Context, RegistryCalls
from .store import versions


class ModelVersionCalls(RegistryCalls):
    """The calls of RegistryServicer on model versions."""

    async def CreateModelVersion(
        self, request: api.CreateModelVersionRequest, context: Context
    ) -> api.CreateModelVersionResponse:
        version = request_fields.model_version(request.model_version)
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
                project,
                "",
                external_id=request_fields.sought(
                    request.external_id, "external_id", *request_fields.VERSION
                ),
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
            request_fields.page_size(request.page_size),
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
        message = request_fields.named_only(
            request.model_version, request.update_mask.paths, versions.UPDATABLE
        )
        record = request_fields.model_version(message, require_model=False, creating=False)
        changes = request_fields.changes(
            record, request.update_mask.paths, (*versions.UPDATABLE, "name")
        )
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
            name = request_fields.sought(
                request.registered_model_name, "registered_model_name", *request_fields.MODEL
            )
            await self._versions.delete_numbered(project, name, request.version)
        else:
            raise invalid_field(
                "registered_model_name", "give its model's name and its number, or its id"
            )
        return api.DeleteModelVersionResponse()

    async def TransitionModelVersionStage(
        self, request: api.TransitionModelVersionStageRequest, context: Context
    ) -> api.TransitionModelVersionStageResponse:
        stage = request_fields.stage(request.stage)
        request_fields.archiving_allowed(stage, request.archive_existing_versions)
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
            request_fields.stages(request.stages),
        )
        return api.GetLatestModelVersionsResponse(
            model_versions=[convert.model_version(v) for v in records]
        )

    async def GetModelVersionDownloadUri(
        self, request: api.GetModelVersionDownloadUriRequest, context: Context
    ) -> api.GetModelVersionDownloadUriResponse:
        uri = await self._versions.download_uri(
            common.project(request.project), validation.entity_id(request.id, "id")
        )
        return api.GetModelVersionDownloadUriResponse(uri=uri)
