"""Artifacts' calls, Kubeflow's: create (a new version of a standalone one too), get,
find, list, update, delete."""

from __future__ import annotations

from cairn.registry.v1 import registry_pb2 as pb
from cairn.registry.v1 import registry_service_pb2 as api

from ..common import validation as common
from ..common.errors import invalid_field
from . import convert, request_fields, validation
from .model import ArtifactKind
from .registry_calls import Context, RegistryCalls
from .store import artifacts


class ArtifactCalls(RegistryCalls):
    """The calls of RegistryServicer on artifacts."""

    async def CreateArtifact(
        self, request: api.CreateArtifactRequest, context: Context
    ) -> api.CreateArtifactResponse:
        artifact = request_fields.artifact(request.artifact)
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
                project,
                external_id=request_fields.sought(
                    request.external_id, "external_id", *request_fields.ARTIFACT
                ),
            )
        elif key == "name":
            record = await self._artifacts.find(
                project,
                model_version_id=validation.entity_id(version, "model_version_id")
                if version
                else "",
                name=request_fields.sought(request.name, "name", *request_fields.ARTIFACT),
                version=request_fields.version_number(request.version),
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
            request_fields.page_size(request.page_size),
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
        message = request_fields.named_only(
            request.artifact, request.update_mask.paths, artifacts.UPDATABLE
        )
        record = request_fields.artifact(message, require_name=False, creating=False)
        changes = request_fields.changes(
            record, request.update_mask.paths, artifacts.UPDATABLE, "model."
        )
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
