"""Tags of registered models and model versions, and models' aliases: set and deleted."""

from __future__ import annotations

from cairn.registry.v1 import registry_service_pb2 as api

from ..common import validation as common
from ..common.errors import invalid_field
from . import validation
from .registry_calls import Context, RegistryCalls


class TagAndAliasCalls(RegistryCalls):
    """The calls of RegistryServicer on models' and versions' tags and models' aliases."""

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
