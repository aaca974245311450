"""`ModelRegistryAPIClient`: Kubeflow Model Registry's client shape, MLflow's registry features."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from google.protobuf.field_mask_pb2 import FieldMask

from .._argument_error import invalid_argument
from .._headers import Metadata
from ..exceptions import AlreadyExistsError, NotFoundError
from ..models._uris import ModelUri, parse_uri
from ..registry.v1 import registry_pb2 as pb
from ..registry.v1 import registry_service_pb2 as api
from ..types import _registry as types
from ..types._arguments import proto
from ..types._paging import PagedList, Pager, gathered
from ..types._registry import (
    MlflowModelVersion,
    ModelArtifact,
    ModelVersionStage,
    RegisteredModel,
)
from .lineage import ModelVersionLineageMixin
from .model_sources import MANIFEST_TAG, files_of
from .registry_mlflow import MlflowRegistry
from .versioned_artifacts import VersionedArtifacts

# MLflow's defaults (mlflow.store.model_registry).
SEARCH_REGISTERED_MODEL_MAX_RESULTS_DEFAULT = 100
SEARCH_MODEL_VERSION_MAX_RESULTS_DEFAULT = 10_000


class ModelRegistryAPIClient(MlflowRegistry, VersionedArtifacts, ModelVersionLineageMixin):
    """Async client of `cairn.registry.v1.RegistryService`.

    The Kubeflow-shaped methods (`upsert_*`, `get_*_by_id`, `get_*_by_params`, lists
    taking `ListOptions`) address objects by id and return None when nothing matches.
    The MLflow-shaped methods address models by name and versions by number, raise
    `NotFoundError`, and return versions as `MlflowModelVersion` (`name` is the model's).
    Every method also takes keyword-only `timeout=` and `metadata=`, except the
    journey's: ML Aide's versioned artifacts (`create_artifact`, `get_artifact`,
    `get_artifact_versions`) and `get_model_version_lineage`, which make several calls
    each (docs/models.md).
    """

    async def update_registered_model(
        self,
        name: str,
        description: str | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> RegisteredModel:
        """MLflow's: sets the model's description.

        Raises:
            InvalidArgumentError: no description (None), before any call, as MLflow
                raises "Attempting to update registered model with no new field values."
        """
        description = _new_description(description)
        model = await self.get_registered_model(name, timeout=timeout, metadata=metadata)
        request = proto(
            api.UpdateRegisteredModelRequest,
            registered_model=types.registered_model_to_proto(
                RegisteredModel(name, id=model.id, description=description), self.project
            ),
            update_mask=FieldMask(paths=["description"]),
        )
        reply = await self._transport.unary(
            self._stub.UpdateRegisteredModel, request, timeout=timeout, metadata=metadata
        )
        return types.registered_model_from_proto(reply.registered_model)

    async def update_model_version(
        self,
        name: str,
        version: int | str,
        description: str | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> MlflowModelVersion:
        """MLflow's: sets a version's description.

        Raises:
            InvalidArgumentError: no description (None), before any call, as MLflow
                raises "Attempting to update model version with no new field values."
        """
        description = _new_description(description)
        found = await self.get_model_version(name, version, timeout=timeout, metadata=metadata)
        # The version's id and the description alone, as update_registered_model sends:
        # the rest of the version as read would make a retry under the caller's request
        # id another request (REQUEST_ID_REUSED) once another writer changed a tag.
        request = proto(
            api.UpdateModelVersionRequest,
            model_version=proto(
                pb.ModelVersion,
                project=self.project,
                id=found.id or "",
                registered_model_id=found.registered_model_id or "",
                description=description,
            ),
            update_mask=FieldMask(paths=["description"]),
        )
        reply = await self._transport.unary(
            self._stub.UpdateModelVersion, request, timeout=timeout, metadata=metadata
        )
        return types.mlflow_model_version_from_proto(reply.model_version)

    async def copy_model_version(
        self,
        src_model_uri: str,
        dst_name: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> MlflowModelVersion:
        """MLflow's: a new version of `dst_name` (created when missing) copying the
        version a models:/ URI names: its source is that URI, with the original's run,
        tags, run link and description, and a model artifact at the original's files
        (its download URI when copied), as MLflow resolves a copy's storage location.

        Args:
            src_model_uri: models:/<name>/<version>, models:/<name>@<alias>,
                models:/<name>/<stage> or models:/<name>/latest.
            dst_name: the registered model to add the version to.

        Raises:
            InvalidArgumentError: src_model_uri is no models:/ URI, or one no copy can
                store as its source (a name with an empty, "." or ".." segment), before
                dst_name is looked up or made.
            NotFoundError: the URI names no version, or one with no source or model
                artifact URI (MODEL_VERSION_NOT_FOUND), before dst_name is made.
        """
        parsed = parse_uri(src_model_uri, "src_model_uri")
        if not isinstance(parsed, ModelUri):
            raise invalid_argument("src_model_uri", f"takes a models:/ URI, not {src_model_uri!r}")
        source = await self._version_of_uri(parsed, timeout, metadata)
        files, pin = await self._files_for_copy(source, dst_name, timeout, metadata)
        try:
            await self.get_registered_model(dst_name, timeout=timeout, metadata=metadata)
        except NotFoundError:
            with contextlib.suppress(AlreadyExistsError):  # made meanwhile by another copy
                await self.create_registered_model(dst_name, timeout=timeout, metadata=metadata)
        copied = await self.create_model_version(
            dst_name,
            f"models:/{source.name}/{source.version}",
            source.run_id,
            {MANIFEST_TAG: pin, **source.tags} if pin else source.tags,
            source.run_link,
            source.description,
            timeout=timeout,
            metadata=metadata,
        )
        await self.upsert_model_artifact(files, copied.id, timeout=timeout, metadata=metadata)
        return copied

    async def _files_for_copy(
        self,
        source: MlflowModelVersion,
        dst_name: str,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> tuple[ModelArtifact, str | None]:
        """The model artifact a copy of source gets, at the original's files, and the pin
        (MANIFEST_TAG) of the versions on the way to them: a load of the copy goes there
        at once, not through the original by its name, which a rename or a delete breaks
        and each copy of a copy would make one hop longer; nor through an alias or stage
        the original's files are named by, which moves on (`files_of`). Read by the
        original's id before the copy is made, so a delete or rename of the original
        meanwhile fails the copy with nothing made, or comes after these reads and
        leaves the copy whole (deleting a version never deletes its files)."""
        download_uri = await self._download_uri_of(source.id, timeout, metadata)
        if not download_uri:  # as a load of it says, before the copy is made
            raise NotFoundError(
                f"version {source.version} of {source.name!r} has no source or model "
                "artifact URI: there is nothing to copy",
                reason="MODEL_VERSION_NOT_FOUND",
            )
        uri, pin = await files_of(self, download_uri, "src_model_uri")
        # The artifact of the files copied (the download URI's), not merely the first,
        # on whichever page it is.
        original = ModelArtifact(dst_name)
        pages = Pager(
            lambda options: self.get_model_artifacts(
                source.id, options, timeout=timeout, metadata=metadata
            )
        )
        async for artifact in pages:
            if artifact.uri == download_uri:
                original = artifact
                break
        copied = ModelArtifact(  # named as the original (a Devo model's, after its file)
            original.name,
            uri=uri,
            description=original.description,
            model_format_name=original.model_format_name,
            model_format_version=original.model_format_version,
            custom_properties=original.custom_properties,
        )
        return copied, pin

    async def _version_of_uri(
        self, uri: ModelUri, timeout: float | None, metadata: Metadata | None
    ) -> MlflowModelVersion:
        if uri.alias is not None:
            return await self.get_model_version_by_alias(
                uri.name, uri.alias, timeout=timeout, metadata=metadata
            )
        if uri.version is not None:
            return await self.get_model_version(
                uri.name, uri.version, timeout=timeout, metadata=metadata
            )
        stages = [uri.stage.value] if uri.stage is not None else None
        found = await self.get_latest_versions(uri.name, stages, timeout=timeout, metadata=metadata)
        if not found:
            raise NotFoundError(f"{uri} names no version", reason="MODEL_VERSION_NOT_FOUND")
        return max(found, key=lambda v: v.version or 0)

    async def get_model_version_stages(
        self,
        name: str,
        version: int | str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> list[str]:
        """MLflow's: the stages a version can be moved to (every stage, as in MLflow).

        Raises:
            NotFoundError: no such version.
        """
        await self.get_model_version(name, version, timeout=timeout, metadata=metadata)
        return [stage.value for stage in ModelVersionStage]

    async def search_registered_models(
        self,
        filter_string: str | None = None,
        max_results: int | None = SEARCH_REGISTERED_MODEL_MAX_RESULTS_DEFAULT,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> PagedList[RegisteredModel]:
        """Models matching a filter such as "name LIKE 'churn%' AND tags.team = 'x'",
        each with MLflow's `latest_versions`.

        Args:
            order_by: one key, e.g. ["name ASC"] (the default, as in MLflow): name,
                creation_timestamp, last_updated_timestamp (or create_time, update_time,
                id), then ASC or DESC.
        """

        async def page(size: int, token: str) -> tuple[list[RegisteredModel], str]:
            request = proto(
                api.ListRegisteredModelsRequest,
                project=self.project,
                filter=filter_string or "",
                page_size=size,
                order_by=_one_order(order_by) or "name ASC",  # MLflow's default
                page_token=token,
            )
            reply = await self._transport.unary(
                self._stub.ListRegisteredModels, request, timeout=timeout, metadata=metadata
            )
            found = [types.registered_model_from_proto(m) for m in reply.registered_models]
            return found, reply.next_page_token

        wanted = SEARCH_REGISTERED_MODEL_MAX_RESULTS_DEFAULT if max_results is None else max_results
        return await gathered(page, wanted, page_token or "")

    async def search_model_versions(
        self,
        filter_string: str | None = None,
        max_results: int | None = SEARCH_MODEL_VERSION_MAX_RESULTS_DEFAULT,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
        *,
        registered_model_id: str | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> PagedList[MlflowModelVersion]:
        """Versions matching a filter in MLflow's names: "name = 'churn'" (the registered
        model's name), run_id, source_path, version_number, current_stage, tags.<key>;
        `version_name` is the version's own (Kubeflow) name. Ordered by one key
        (docs/registry.md), by default the last updated first, as MLflow orders them.
        Up to max_results of them, gathered from pages
        of at most 1,000. registered_model_id: only the
        versions of that model, whatever the filter says (a filter written around a
        name could close its parenthesis and reach other models).
        """

        async def page(size: int, token: str) -> tuple[list[MlflowModelVersion], str]:
            request = proto(
                api.ListModelVersionsRequest,
                project=self.project,
                registered_model_id=registered_model_id or "",
                filter=filter_string or "",
                page_size=size,
                # MLflow's default (its store's; ties, rare, go by id here).
                order_by=_one_order(order_by) or "last_updated_timestamp DESC",
                page_token=token,
            )
            reply = await self._transport.unary(
                self._stub.ListModelVersions, request, timeout=timeout, metadata=metadata
            )
            found = [types.mlflow_model_version_from_proto(v) for v in reply.model_versions]
            return found, reply.next_page_token

        wanted = SEARCH_MODEL_VERSION_MAX_RESULTS_DEFAULT if max_results is None else max_results
        return await gathered(page, wanted, page_token or "")


def _new_description(description: str | None) -> str:
    # MLflow's update_* change the description alone, so one of None has nothing to
    # change: MLflow raises, where answering the object unchanged hid the mistake.
    if description is None:
        raise invalid_argument("description", "no new value to update with (None)")
    if not isinstance(description, str):  # set on a message as it is, a bare TypeError
        raise invalid_argument("description", f"{description!r:.200} is no string")
    return description


def _one_order(order_by: Sequence[str] | None) -> str:
    """The registry orders by one key; the server reads MLflow's field names too."""
    if not order_by:
        return ""
    if len(order_by) > 1:
        raise invalid_argument("order_by", "the registry orders by one key, e.g. ['name ASC']")
    return str(order_by[0]).strip()  # blank is unset: the default order
