"""`ModelRegistryAPIClient`: Kubeflow Model Registry's client shape, MLflow's registry features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.field_mask_pb2 import FieldMask

from .._base import BaseClient
from .._transport import Metadata
from ..exceptions import NotFoundError
from ..registry.v1 import registry_pb2 as pb
from ..registry.v1 import registry_service_pb2 as api
from ..registry.v1 import registry_service_pb2_grpc
from ..types import _registry as types
from ..types._paging import ListOptions, OrderByField, PagedList
from ..types._registry import Artifact, ModelArtifact, ModelVersion, RegisteredModel

_MODEL_FIELDS = ["name", "description", "owner", "state", "external_id", "custom_properties"]
_VERSION_FIELDS = [
    "name",
    "author",
    "description",
    "state",
    "source_run_id",
    "source_uri",
    "external_id",
    "custom_properties",
]
_ARTIFACT_FIELDS = [
    "description",
    "uri",
    "state",
    "external_id",
    "custom_properties",
    "model.model_format_name",
    "model.model_format_version",
    "model.storage_key",
    "model.storage_path",
    "model.service_account_name",
]
_ORDER = {
    OrderByField.CREATE_TIME: "create_time",
    OrderByField.UPDATE_TIME: "update_time",
    OrderByField.ID: "id",
}


class ModelRegistryAPIClient(BaseClient):
    """Async client of `cairn.registry.v1.RegistryService`.

    The Kubeflow-shaped methods (`upsert_*`, `get_*_by_id`, `get_*_by_params`, lists
    taking `ListOptions`) address objects by id and return None when nothing matches.
    The MLflow-shaped methods address models by name and versions by number, and raise
    `NotFoundError`. Every method also takes keyword-only `timeout=` and `metadata=`.
    """

    def _bind(self, channel: Any) -> None:
        self._stub = registry_service_pb2_grpc.RegistryServiceStub(channel)

    async def _call(
        self, name: str, request: Any, timeout: float | None, metadata: Metadata | None
    ) -> Any:
        return await self._transport.unary(
            getattr(self._stub, name), request, timeout=timeout, metadata=metadata
        )

    async def _maybe(
        self, name: str, request: Any, timeout: float | None, metadata: Metadata | None
    ) -> Any:
        try:
            return await self._call(name, request, timeout, metadata)
        except NotFoundError:
            return None

    # Kubeflow: upserts

    async def upsert_registered_model(
        self,
        registered_model: RegisteredModel,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> RegisteredModel:
        """Creates the model (no id) or updates its fields (with an id); returns it as stored."""
        message = types.registered_model_to_proto(registered_model, self.project)
        if registered_model.id:
            request: Any = api.UpdateRegisteredModelRequest(
                registered_model=message, update_mask=FieldMask(paths=_MODEL_FIELDS)
            )
            reply = await self._call("UpdateRegisteredModel", request, timeout, metadata)
        else:
            reply = await self._call(
                "CreateRegisteredModel",
                api.CreateRegisteredModelRequest(registered_model=message),
                timeout,
                metadata,
            )
        return types.registered_model_from_proto(reply.registered_model)

    async def upsert_model_version(
        self,
        model_version: ModelVersion,
        registered_model_id: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> ModelVersion:
        """Creates a version of the model (numbered 1, 2, 3 ...) or updates one with an id."""
        message = types.model_version_to_proto(
            model_version, self.project, str(registered_model_id)
        )
        if model_version.id:
            request: Any = api.UpdateModelVersionRequest(
                model_version=message, update_mask=FieldMask(paths=_VERSION_FIELDS)
            )
            reply = await self._call("UpdateModelVersion", request, timeout, metadata)
        else:
            reply = await self._call(
                "CreateModelVersion",
                api.CreateModelVersionRequest(model_version=message),
                timeout,
                metadata,
            )
        return types.model_version_from_proto(reply.model_version)

    async def upsert_model_artifact(
        self,
        model_artifact: ModelArtifact,
        model_version_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> ModelArtifact:
        """Creates a model artifact, attached to a version when one is given, or updates it."""
        stored = await self._upsert_artifact(model_artifact, model_version_id, timeout, metadata)
        assert isinstance(stored, ModelArtifact)
        return stored

    async def upsert_model_version_artifact(
        self,
        artifact: Artifact,
        model_version_id: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> Artifact:
        """Creates or updates a model or doc artifact of a version."""
        return await self._upsert_artifact(artifact, model_version_id, timeout, metadata)

    async def _upsert_artifact(
        self,
        artifact: Artifact,
        model_version_id: str | None,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> Artifact:
        message = types.artifact_to_proto(artifact, self.project, model_version_id)
        if artifact.id:
            request: Any = api.UpdateArtifactRequest(
                artifact=message, update_mask=FieldMask(paths=_ARTIFACT_FIELDS)
            )
            reply = await self._call("UpdateArtifact", request, timeout, metadata)
        else:
            reply = await self._call(
                "CreateArtifact", api.CreateArtifactRequest(artifact=message), timeout, metadata
            )
        return types.artifact_from_proto(reply.artifact)

    # Kubeflow: queries by id and by params (None when nothing matches)

    async def get_registered_model_by_id(
        self, id: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> RegisteredModel | None:
        reply = await self._maybe(
            "GetRegisteredModel",
            api.GetRegisteredModelRequest(project=self.project, id=str(id)),
            timeout,
            metadata,
        )
        return types.registered_model_from_proto(reply.registered_model) if reply else None

    async def get_model_version_by_id(
        self,
        model_version_id: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> ModelVersion | None:
        reply = await self._maybe(
            "GetModelVersion",
            api.GetModelVersionRequest(project=self.project, id=str(model_version_id)),
            timeout,
            metadata,
        )
        return types.model_version_from_proto(reply.model_version) if reply else None

    async def get_model_artifact_by_id(
        self, id: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> ModelArtifact | None:
        reply = await self._maybe(
            "GetArtifact",
            api.GetArtifactRequest(project=self.project, id=str(id)),
            timeout,
            metadata,
        )
        found = types.artifact_from_proto(reply.artifact) if reply else None
        return found if isinstance(found, ModelArtifact) else None

    async def get_registered_model_by_params(
        self,
        name: str | None = None,
        external_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> RegisteredModel | None:
        """By name or by external id."""
        _exactly_one(name=name, external_id=external_id)
        request = (
            api.FindRegisteredModelRequest(project=self.project, name=name)
            if name
            else api.FindRegisteredModelRequest(project=self.project, external_id=external_id)
        )
        reply = await self._maybe("FindRegisteredModel", request, timeout, metadata)
        return types.registered_model_from_proto(reply.registered_model) if reply else None

    async def get_model_version_by_params(
        self,
        registered_model_id: str | None = None,
        version: str | None = None,
        external_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> ModelVersion | None:
        """By external id, or by registered model id and version name (e.g. "v1.0")."""
        if external_id:
            request = api.FindModelVersionRequest(project=self.project, external_id=external_id)
        elif registered_model_id and version:
            request = api.FindModelVersionRequest(
                project=self.project, registered_model_id=str(registered_model_id), name=version
            )
        else:
            raise ValueError("give external_id, or registered_model_id and version")
        reply = await self._maybe("FindModelVersion", request, timeout, metadata)
        return types.model_version_from_proto(reply.model_version) if reply else None

    async def get_model_artifact_by_params(
        self,
        name: str | None = None,
        model_version_id: str | None = None,
        external_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> ModelArtifact | None:
        """By external id, or by name (within a model version when one is given)."""
        if external_id:
            request = api.FindArtifactRequest(project=self.project, external_id=external_id)
        elif name:
            request = api.FindArtifactRequest(
                project=self.project, model_version_id=str(model_version_id or ""), name=name
            )
        else:
            raise ValueError("give external_id, or name (and model_version_id)")
        reply = await self._maybe("FindArtifact", request, timeout, metadata)
        found = types.artifact_from_proto(reply.artifact) if reply else None
        return found if isinstance(found, ModelArtifact) else None

    # Kubeflow: lists (with ListOptions, for Pager)

    async def get_registered_models(
        self,
        options: ListOptions | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> PagedList[RegisteredModel]:
        """One page of registered models (20 by default)."""
        options = options or ListOptions()
        request = api.ListRegisteredModelsRequest(project=self.project, **_list_fields(options))
        reply = await self._call("ListRegisteredModels", request, timeout, metadata)
        return _page(
            options, [types.registered_model_from_proto(m) for m in reply.registered_models], reply
        )

    async def get_model_versions(
        self,
        registered_model_id: str,
        options: ListOptions | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> PagedList[ModelVersion]:
        options = options or ListOptions()
        request = api.ListModelVersionsRequest(
            project=self.project,
            registered_model_id=str(registered_model_id),
            **_list_fields(options),
        )
        reply = await self._call("ListModelVersions", request, timeout, metadata)
        return _page(
            options, [types.model_version_from_proto(v) for v in reply.model_versions], reply
        )

    async def get_model_artifacts(
        self,
        model_version_id: str | None = None,
        options: ListOptions | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> PagedList[ModelArtifact]:
        """Model artifacts of a version, or of the whole project when no version is given."""
        return await self._artifacts(
            model_version_id, pb.ARTIFACT_KIND_MODEL, options, timeout, metadata
        )  # type: ignore[return-value]

    async def get_model_version_artifacts(
        self,
        model_version_id: str,
        options: ListOptions | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> PagedList[Artifact]:
        """Every artifact (model and doc) of a version."""
        return await self._artifacts(
            model_version_id, pb.ARTIFACT_KIND_UNSPECIFIED, options, timeout, metadata
        )

    async def _artifacts(
        self,
        model_version_id: str | None,
        kind: int,
        options: ListOptions | None,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> PagedList[Artifact]:
        options = options or ListOptions()
        request = api.ListArtifactsRequest(
            project=self.project,
            model_version_id=str(model_version_id or ""),
            kind=kind,  # type: ignore[arg-type]
            **_list_fields(options),
        )
        reply = await self._call("ListArtifacts", request, timeout, metadata)
        return _page(options, [types.artifact_from_proto(a) for a in reply.artifacts], reply)

    # MLflow: by model name and version number

    async def get_registered_model(
        self, name: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> RegisteredModel:
        """Raises NotFoundError when no model has the name."""
        reply = await self._call(
            "FindRegisteredModel",
            api.FindRegisteredModelRequest(project=self.project, name=name),
            timeout,
            metadata,
        )
        return types.registered_model_from_proto(reply.registered_model)

    async def create_registered_model(
        self,
        name: str,
        tags: dict[str, Any] | None = None,
        description: str | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> RegisteredModel:
        model = RegisteredModel(
            name, description=description, tags={k: str(v) for k, v in (tags or {}).items()}
        )
        return await self.upsert_registered_model(model, timeout=timeout, metadata=metadata)

    async def rename_registered_model(
        self,
        name: str,
        new_name: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> RegisteredModel:
        model_id = await self._model_id(name, timeout, metadata)
        request = api.RenameRegisteredModelRequest(
            project=self.project, id=model_id, new_name=new_name
        )
        reply = await self._call("RenameRegisteredModel", request, timeout, metadata)
        return types.registered_model_from_proto(reply.registered_model)

    async def delete_registered_model(
        self, name: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> None:
        """Deletes the model with all its versions and their artifacts (archive instead by
        upserting state=ARCHIVED)."""
        model_id = await self._model_id(name, timeout, metadata)
        await self._call(
            "DeleteRegisteredModel",
            api.DeleteRegisteredModelRequest(project=self.project, id=model_id),
            timeout,
            metadata,
        )

    async def set_registered_model_tag(
        self,
        name: str,
        key: str,
        value: Any,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        model_id = await self._model_id(name, timeout, metadata)
        request = api.SetRegisteredModelTagRequest(
            project=self.project, registered_model_id=model_id, key=key, value=str(value)
        )
        await self._call("SetRegisteredModelTag", request, timeout, metadata)

    async def delete_registered_model_tag(
        self, name: str, key: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> None:
        model_id = await self._model_id(name, timeout, metadata)
        request = api.DeleteRegisteredModelTagRequest(
            project=self.project, registered_model_id=model_id, key=key
        )
        await self._call("DeleteRegisteredModelTag", request, timeout, metadata)

    async def set_registered_model_alias(
        self,
        name: str,
        alias: str,
        version: int | str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        """Points the alias at a version, moving it from any other version atomically."""
        model_id = await self._model_id(name, timeout, metadata)
        request = api.SetRegisteredModelAliasRequest(
            project=self.project, registered_model_id=model_id, alias=alias, version=int(version)
        )
        await self._call("SetRegisteredModelAlias", request, timeout, metadata)

    async def delete_registered_model_alias(
        self,
        name: str,
        alias: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        model_id = await self._model_id(name, timeout, metadata)
        request = api.DeleteRegisteredModelAliasRequest(
            project=self.project, registered_model_id=model_id, alias=alias
        )
        await self._call("DeleteRegisteredModelAlias", request, timeout, metadata)

    async def get_model_version_by_alias(
        self,
        name: str,
        alias: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> ModelVersion:
        model_id = await self._model_id(name, timeout, metadata)
        request = api.FindModelVersionRequest(
            project=self.project, registered_model_id=model_id, alias=alias
        )
        reply = await self._call("FindModelVersion", request, timeout, metadata)
        return types.model_version_from_proto(reply.model_version)

    async def create_model_version(
        self,
        name: str,
        source: str,
        run_id: str | None = None,
        tags: dict[str, Any] | None = None,
        description: str | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> ModelVersion:
        """MLflow's form: a new version of the model `name` from `source`."""
        model_id = await self._model_id(name, timeout, metadata)
        version = ModelVersion(
            "",
            description=description,
            source_uri=source,
            source_run_id=run_id,
            tags={k: str(v) for k, v in (tags or {}).items()},
        )
        return await self.upsert_model_version(
            version, model_id, timeout=timeout, metadata=metadata
        )

    async def get_model_version(
        self,
        name: str,
        version: int | str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> ModelVersion:
        model_id = await self._model_id(name, timeout, metadata)
        request = api.FindModelVersionRequest(
            project=self.project, registered_model_id=model_id, version=int(version)
        )
        reply = await self._call("FindModelVersion", request, timeout, metadata)
        return types.model_version_from_proto(reply.model_version)

    async def delete_model_version(
        self,
        name: str,
        version: int | str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        """Deletes the version and its artifacts; its number is never given out again."""
        found = await self.get_model_version(name, version, timeout=timeout, metadata=metadata)
        await self._call(
            "DeleteModelVersion",
            api.DeleteModelVersionRequest(project=self.project, id=found.id),
            timeout,
            metadata,
        )

    async def transition_model_version_stage(
        self,
        name: str,
        version: int | str,
        stage: str,
        archive_existing_versions: bool = False,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> ModelVersion:
        """Moves a version to "None", "Staging", "Production" or "Archived"; with
        archive_existing_versions, the model's other versions in that stage are archived."""
        found = await self.get_model_version(name, version, timeout=timeout, metadata=metadata)
        request = api.TransitionModelVersionStageRequest(
            project=self.project,
            id=found.id,
            stage=types.stage_to_proto(stage),
            archive_existing_versions=archive_existing_versions,
        )
        reply = await self._call("TransitionModelVersionStage", request, timeout, metadata)
        return types.model_version_from_proto(reply.model_version)

    async def get_latest_versions(
        self,
        name: str,
        stages: Sequence[str] | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> list[ModelVersion]:
        """The highest version in each stage (every stage when none is given)."""
        model_id = await self._model_id(name, timeout, metadata)
        request = api.GetLatestModelVersionsRequest(
            project=self.project,
            registered_model_id=model_id,
            stages=[types.stage_to_proto(s) for s in stages or ()],
        )
        reply = await self._call("GetLatestModelVersions", request, timeout, metadata)
        return [types.model_version_from_proto(v) for v in reply.model_versions]

    async def set_model_version_tag(
        self,
        name: str,
        version: int | str,
        key: str,
        value: Any,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        found = await self.get_model_version(name, version, timeout=timeout, metadata=metadata)
        request = api.SetModelVersionTagRequest(
            project=self.project, model_version_id=found.id, key=key, value=str(value)
        )
        await self._call("SetModelVersionTag", request, timeout, metadata)

    async def delete_model_version_tag(
        self,
        name: str,
        version: int | str,
        key: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        found = await self.get_model_version(name, version, timeout=timeout, metadata=metadata)
        request = api.DeleteModelVersionTagRequest(
            project=self.project, model_version_id=found.id, key=key
        )
        await self._call("DeleteModelVersionTag", request, timeout, metadata)

    async def get_model_version_download_uri(
        self,
        name: str,
        version: int | str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> str:
        """The URI of the version's first model artifact, else its source URI."""
        found = await self.get_model_version(name, version, timeout=timeout, metadata=metadata)
        request = api.GetModelVersionDownloadUriRequest(project=self.project, id=found.id)
        return str((await self._call("GetModelVersionDownloadUri", request, timeout, metadata)).uri)

    async def search_registered_models(
        self,
        filter_string: str | None = None,
        max_results: int = 100,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> PagedList[RegisteredModel]:
        """Models matching a filter such as "name LIKE 'churn%' AND tags.team = 'x'"."""
        request = api.ListRegisteredModelsRequest(
            project=self.project,
            filter=filter_string or "",
            page_size=max_results,
            order_by=_one_order(order_by),
            page_token=page_token or "",
        )
        reply = await self._call("ListRegisteredModels", request, timeout, metadata)
        return PagedList(
            [types.registered_model_from_proto(m) for m in reply.registered_models],
            reply.next_page_token,
        )

    async def search_model_versions(
        self,
        filter_string: str | None = None,
        max_results: int = 100,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> PagedList[ModelVersion]:
        """Versions matching a filter such as "name = 'v3' AND run_id = '...'" or
        "model_name = 'churn' AND tags.validated = 'yes'"."""
        request = api.ListModelVersionsRequest(
            project=self.project,
            filter=filter_string or "",
            page_size=max_results,
            order_by=_one_order(order_by),
            page_token=page_token or "",
        )
        reply = await self._call("ListModelVersions", request, timeout, metadata)
        return PagedList(
            [types.model_version_from_proto(v) for v in reply.model_versions], reply.next_page_token
        )

    async def _model_id(self, name: str, timeout: float | None, metadata: Metadata | None) -> str:
        return (await self.get_registered_model(name, timeout=timeout, metadata=metadata)).id or ""


def _exactly_one(**given: str | None) -> None:
    if sum(1 for v in given.values() if v) != 1:
        raise ValueError(f"give exactly one of {', '.join(given)}")


def _list_fields(options: ListOptions) -> dict[str, Any]:
    order = ""
    if options.order_by is not None:
        order = f"{_ORDER[options.order_by]} {'asc' if options.is_asc else 'desc'}"
    elif not options.is_asc:
        order = "create_time desc"
    return {
        "page_size": options.limit or 0,
        "page_token": options.next_page_token or "",
        "order_by": order,
    }


def _one_order(order_by: Sequence[str] | None) -> str:
    if not order_by:
        return ""
    if len(order_by) > 1:
        raise ValueError("registry lists order by one field")
    return {
        "creation_timestamp": "create_time",
        "last_updated_timestamp": "update_time",
    }.get(order_by[0].split()[0], order_by[0].split()[0]) + "".join(
        f" {w}" for w in order_by[0].split()[1:]
    )


def _page(options: ListOptions, items: list[Any], reply: Any) -> PagedList[Any]:
    page = PagedList(items, reply.next_page_token)
    options.next_page_token = page.next_page_token
    return page
