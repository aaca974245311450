"""`ModelRegistryAPIClient`: Kubeflow Model Registry's client shape, MLflow's registry features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._transport import Metadata
from ..registry.v1 import registry_service_pb2 as api
from ..types import _registry as types
from ..types._paging import PagedList
from ..types._registry import ModelVersion, RegisteredModel
from .lineage import ModelVersionLineageMixin
from .registry_core import RegistryCore, one_order
from .versioned_artifacts import VersionedArtifacts


class ModelRegistryAPIClient(RegistryCore, VersionedArtifacts, ModelVersionLineageMixin):
    """Async client of `cairn.registry.v1.RegistryService`.

    The Kubeflow-shaped methods (`upsert_*`, `get_*_by_id`, `get_*_by_params`, lists
    taking `ListOptions`) address objects by id and return None when nothing matches.
    The MLflow-shaped methods below address models by name and versions by number, and
    raise `NotFoundError`. Every method also takes keyword-only `timeout=` and `metadata=`,
    except the journey's: ML Aide's versioned artifacts (`create_artifact`,
    `get_artifact`, `get_artifact_versions`) and `get_model_version_lineage`, which make
    several calls each (docs/models.md).
    """

    # MLflow: by model name and version number

    async def get_registered_model(
        self, name: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> RegisteredModel:
        """Raises NotFoundError when no model has the name."""
        reply = await self._transport.unary(
            self._stub.FindRegisteredModel,
            api.FindRegisteredModelRequest(project=self.project, name=name),
            timeout=timeout,
            metadata=metadata,
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
        reply = await self._transport.unary(
            self._stub.RenameRegisteredModel, request, timeout=timeout, metadata=metadata
        )
        return types.registered_model_from_proto(reply.registered_model)

    async def delete_registered_model(
        self, name: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> None:
        """Deletes the model with all its versions and their artifacts (archive instead by
        upserting state=ARCHIVED)."""
        model_id = await self._model_id(name, timeout, metadata)
        await self._transport.unary(
            self._stub.DeleteRegisteredModel,
            api.DeleteRegisteredModelRequest(project=self.project, id=model_id),
            timeout=timeout,
            metadata=metadata,
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
        await self._transport.unary(
            self._stub.SetRegisteredModelTag, request, timeout=timeout, metadata=metadata
        )

    async def delete_registered_model_tag(
        self, name: str, key: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> None:
        model_id = await self._model_id(name, timeout, metadata)
        request = api.DeleteRegisteredModelTagRequest(
            project=self.project, registered_model_id=model_id, key=key
        )
        await self._transport.unary(
            self._stub.DeleteRegisteredModelTag, request, timeout=timeout, metadata=metadata
        )

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
        await self._transport.unary(
            self._stub.SetRegisteredModelAlias, request, timeout=timeout, metadata=metadata
        )

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
        await self._transport.unary(
            self._stub.DeleteRegisteredModelAlias, request, timeout=timeout, metadata=metadata
        )

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
        reply = await self._transport.unary(
            self._stub.FindModelVersion, request, timeout=timeout, metadata=metadata
        )
        return types.model_version_from_proto(reply.model_version)

    async def create_model_version(
        self,
        name: str,
        source: str,
        run_id: str | None = None,
        tags: dict[str, Any] | None = None,
        run_link: str | None = None,
        description: str | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> ModelVersion:
        """MLflow's form (and argument order): a new version of the model `name`.

        Args:
            name: the registered model.
            source: where the version's files are: a models:/, runs:/ or
                cairn-artifacts:// URI, or another store's (s3://...); a file: URI is
                refused (InvalidArgumentError, INVALID_ARTIFACT_LOCATION).
            run_id: the run that produced it.
            tags: the version's tags.
            run_link: a link to the run (kept as the custom property "run_link").
            description: a description.

        Returns:
            The version, numbered 1, 2, 3 ... per model.
        """
        model_id = await self._model_id(name, timeout, metadata)
        version = ModelVersion(
            "",
            description=description,
            source_uri=source,
            source_run_id=run_id,
            tags={k: str(v) for k, v in (tags or {}).items()},
            custom_properties={"run_link": run_link} if run_link else {},
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
        reply = await self._transport.unary(
            self._stub.FindModelVersion, request, timeout=timeout, metadata=metadata
        )
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
        await self._transport.unary(
            self._stub.DeleteModelVersion,
            api.DeleteModelVersionRequest(project=self.project, id=found.id),
            timeout=timeout,
            metadata=metadata,
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
        reply = await self._transport.unary(
            self._stub.TransitionModelVersionStage, request, timeout=timeout, metadata=metadata
        )
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
        reply = await self._transport.unary(
            self._stub.GetLatestModelVersions, request, timeout=timeout, metadata=metadata
        )
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
        await self._transport.unary(
            self._stub.SetModelVersionTag, request, timeout=timeout, metadata=metadata
        )

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
        await self._transport.unary(
            self._stub.DeleteModelVersionTag, request, timeout=timeout, metadata=metadata
        )

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
        return str(
            (
                await self._transport.unary(
                    self._stub.GetModelVersionDownloadUri,
                    request,
                    timeout=timeout,
                    metadata=metadata,
                )
            ).uri
        )

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
            order_by=one_order(order_by),
            page_token=page_token or "",
        )
        reply = await self._transport.unary(
            self._stub.ListRegisteredModels, request, timeout=timeout, metadata=metadata
        )
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
            order_by=one_order(order_by),
            page_token=page_token or "",
        )
        reply = await self._transport.unary(
            self._stub.ListModelVersions, request, timeout=timeout, metadata=metadata
        )
        return PagedList(
            [types.model_version_from_proto(v) for v in reply.model_versions], reply.next_page_token
        )

    async def _model_id(self, name: str, timeout: float | None, metadata: Metadata | None) -> str:
        return (await self.get_registered_model(name, timeout=timeout, metadata=metadata)).id or ""
