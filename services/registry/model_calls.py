"""Registered models' calls: create, get, find, list, update, rename, delete."""

from __future__ import annotations

from cairn.registry.v1 import registry_service_pb2 as api

from ..common import validation as common
from ..common.errors import invalid_field
from . import convert, request_fields, validation
from .registry_calls import Context, RegistryCalls
from .store import models


class RegisteredModelCalls(RegistryCalls):
    """The calls of RegistryServicer on registered models themselves."""

    async def CreateRegisteredModel(
        self, request: api.CreateRegisteredModelRequest, context: Context
    ) -> api.CreateRegisteredModelResponse:
        model = request_fields.registered_model(request.registered_model)
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
            record = await self._models.find(
                project, name=request_fields.sought(request.name, "name", *request_fields.MODEL)
            )
        elif key == "external_id":
            record = await self._models.find(
                project,
                external_id=request_fields.sought(
                    request.external_id, "external_id", *request_fields.MODEL
                ),
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
            request_fields.page_size(request.page_size),
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
        message = request_fields.named_only(
            request.registered_model, request.update_mask.paths, models.UPDATABLE
        )
        record = request_fields.registered_model(message, require_name=False, creating=False)
        changes = request_fields.changes(
            record, request.update_mask.paths, (*models.UPDATABLE, "name")
        )
        updated = await self._models.update(
            record.project, validation.entity_id(message.id, "registered_model.id"), changes
        )
        return api.UpdateRegisteredModelResponse(registered_model=convert.registered_model(updated))

    async def RenameRegisteredModel(
        self, request: api.RenameRegisteredModelRequest, context: Context
    ) -> api.RenameRegisteredModelResponse:
        model_id, name = request_fields.model_key(request.id, request.name)
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
        model_id, name = request_fields.model_key(request.id, request.name)
        await self._models.delete(common.project(request.project), model_id, name=name)
        return api.DeleteRegisteredModelResponse()
