"""MLflow's registry methods: models by name, versions by number, stages, aliases, tags.

Versions come back as `MlflowModelVersion`, whose `name` is the registered model's
name as in MLflow (docs/client.md, "MLflow").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._argument_error import invalid_argument
from .._headers import Metadata
from ..exceptions import NotFoundError
from ..models._uris import version_number
from ..registry.v1 import registry_service_pb2 as api
from ..types import _registry as types
from ..types._arguments import proto
from ..types._registry import MlflowModelVersion, ModelVersion, RegisteredModel
from .registry_core import RegistryCore

# MLflow's DEFAULT_AWAIT_MAX_SLEEP_SECONDS.
DEFAULT_AWAIT_MAX_SLEEP_SECONDS = 300


class MlflowRegistry(RegistryCore):
    """MLflow's `MlflowClient` registry methods, by model name and version number;
    `NotFoundError` when nothing matches."""

    async def get_registered_model(
        self, name: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> RegisteredModel:
        """Raises NotFoundError when no model has the name."""
        reply = await self._transport.unary(
            self._stub.FindRegisteredModel,
            proto(api.FindRegisteredModelRequest, project=self.project, name=name),
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
        model = RegisteredModel(name, description=description, tags=_tags_as_text(tags))
        return await self.upsert_registered_model(model, timeout=timeout, metadata=metadata)

    async def rename_registered_model(
        self,
        name: str,
        new_name: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> RegisteredModel:
        # By name: the registry looks it up in the rename's own transaction, so a repeat
        # under the caller's request id gets the first answer (a lookup first was
        # NOT_FOUND once the first had renamed it).
        request = proto(
            api.RenameRegisteredModelRequest, project=self.project, name=name, new_name=new_name
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
        await self._transport.unary(
            self._stub.DeleteRegisteredModel,
            proto(api.DeleteRegisteredModelRequest, project=self.project, name=name),  # as rename
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
        request = proto(
            api.SetRegisteredModelTagRequest,
            project=self.project,
            registered_model_id=model_id,
            key=key,
            value=str(value),
        )
        await self._transport.unary(
            self._stub.SetRegisteredModelTag, request, timeout=timeout, metadata=metadata
        )

    async def delete_registered_model_tag(
        self, name: str, key: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> None:
        model_id = await self._model_id(name, timeout, metadata)
        request = proto(
            api.DeleteRegisteredModelTagRequest,
            project=self.project,
            registered_model_id=model_id,
            key=key,
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
        request = proto(
            api.SetRegisteredModelAliasRequest,
            project=self.project,
            registered_model_id=model_id,
            alias=alias,
            version=version_number(version),
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
        request = proto(
            api.DeleteRegisteredModelAliasRequest,
            project=self.project,
            registered_model_id=model_id,
            alias=alias,
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
    ) -> MlflowModelVersion:
        model_id = await self._model_id(name, timeout, metadata)
        request = proto(
            api.FindModelVersionRequest,
            project=self.project,
            registered_model_id=model_id,
            alias=alias,
        )
        reply = await self._transport.unary(
            self._stub.FindModelVersion, request, timeout=timeout, metadata=metadata
        )
        return types.mlflow_model_version_from_proto(reply.model_version)

    async def create_model_version(
        self,
        name: str,
        source: str,
        run_id: str | None = None,
        tags: dict[str, Any] | None = None,
        run_link: str | None = None,
        description: str | None = None,
        await_creation_for: int = DEFAULT_AWAIT_MAX_SLEEP_SECONDS,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> MlflowModelVersion:
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
            await_creation_for: accepted for MLflow's order and not used: a version is
                stored whole by this call, READY when it returns, so there is nothing
                to wait for.

        Returns:
            The version, numbered 1, 2, 3 ... per model.
        """
        if not source:  # MLflow's server requires it; a version of no files loads nothing
            raise invalid_argument("source", "a version needs the URI of its files")
        version_tags = _tags_as_text(tags)
        model_id = await self._model_id(name, timeout, metadata)
        version = ModelVersion(
            "",
            description=description,
            source_uri=source,
            source_run_id=run_id,
            tags=version_tags,
            custom_properties={"run_link": run_link} if run_link else {},
        )
        created = await self.upsert_model_version(
            version, model_id, timeout=timeout, metadata=metadata
        )
        return _as_mlflow(created, name)

    async def get_model_version(
        self,
        name: str,
        version: int | str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> MlflowModelVersion:
        model_id = await self._model_id(name, timeout, metadata)
        request = proto(
            api.FindModelVersionRequest,
            project=self.project,
            registered_model_id=model_id,
            version=version_number(version),
        )
        reply = await self._transport.unary(
            self._stub.FindModelVersion, request, timeout=timeout, metadata=metadata
        )
        return types.mlflow_model_version_from_proto(reply.model_version)

    async def delete_model_version(
        self,
        name: str,
        version: int | str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        """Deletes the version and its artifacts; its number is never given out again."""
        request = proto(  # by name and number, as rename_registered_model names its model
            api.DeleteModelVersionRequest,
            project=self.project,
            registered_model_name=name,
            version=version_number(version),
        )
        await self._transport.unary(
            self._stub.DeleteModelVersion, request, timeout=timeout, metadata=metadata
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
    ) -> MlflowModelVersion:
        """Moves a version to "None", "Staging", "Production" or "Archived"; with
        archive_existing_versions, the model's other versions in that stage are archived."""
        to = types.stage_to_proto(stage)  # before any call, as docs/client.md says
        found = await self.get_model_version(name, version, timeout=timeout, metadata=metadata)
        request = proto(
            api.TransitionModelVersionStageRequest,
            project=self.project,
            id=found.id,
            stage=to,
            archive_existing_versions=archive_existing_versions,
        )
        reply = await self._transport.unary(
            self._stub.TransitionModelVersionStage, request, timeout=timeout, metadata=metadata
        )
        return types.mlflow_model_version_from_proto(reply.model_version)

    async def get_latest_versions(
        self,
        name: str,
        stages: Sequence[str] | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> list[MlflowModelVersion]:
        """The highest version in each stage (every stage when none is given)."""
        if isinstance(stages, str):
            raise invalid_argument("stages", f"{stages!r} is no list of stages: pass [{stages!r}]")
        model_id = await self._model_id(name, timeout, metadata)
        request = proto(
            api.GetLatestModelVersionsRequest,
            project=self.project,
            registered_model_id=model_id,
            stages=[types.stage_to_proto(s, "stages") for s in stages or ()],
        )
        reply = await self._transport.unary(
            self._stub.GetLatestModelVersions, request, timeout=timeout, metadata=metadata
        )
        return [types.mlflow_model_version_from_proto(v) for v in reply.model_versions]

    async def set_model_version_tag(
        self,
        name: str,
        version: int | str | None = None,
        key: str | None = None,
        value: Any = None,
        stage: str | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        """Sets a tag on a version, named by number or (MLflow's `stage=`) as the
        highest version in a stage.

        Raises:
            InvalidArgumentError: neither or both of version and stage, or no key.
            NotFoundError: no such version, or no version in the stage.
        """
        if key is None:
            raise invalid_argument("key", "set_model_version_tag needs a key")
        found = await self._version_or_stage(name, version, stage, timeout, metadata)
        request = proto(
            api.SetModelVersionTagRequest,
            project=self.project,
            model_version_id=found.id,
            key=key,
            value=str(value),
        )
        await self._transport.unary(
            self._stub.SetModelVersionTag, request, timeout=timeout, metadata=metadata
        )

    async def delete_model_version_tag(
        self,
        name: str,
        version: int | str | None = None,
        key: str | None = None,
        stage: str | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        """Deletes a version's tag; the version as in set_model_version_tag."""
        if key is None:
            raise invalid_argument("key", "delete_model_version_tag needs a key")
        found = await self._version_or_stage(name, version, stage, timeout, metadata)
        request = proto(
            api.DeleteModelVersionTagRequest,
            project=self.project,
            model_version_id=found.id,
            key=key,
        )
        await self._transport.unary(
            self._stub.DeleteModelVersionTag, request, timeout=timeout, metadata=metadata
        )

    async def _version_or_stage(
        self,
        name: str,
        version: int | str | None,
        stage: str | None,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> MlflowModelVersion:
        """MLflow's rule: exactly one of version and stage; a stage means the highest
        version in it."""
        if (version is None) == (stage is None):
            raise invalid_argument("version", "give exactly one of version and stage")
        if version is not None:
            return await self.get_model_version(name, version, timeout=timeout, metadata=metadata)
        types.stage_to_proto(str(stage), "stage")  # refused naming the caller's argument
        found = await self.get_latest_versions(
            name, [str(stage)], timeout=timeout, metadata=metadata
        )
        if not found:
            raise NotFoundError(
                f"model {name!r} has no version in stage {stage}",
                reason="MODEL_VERSION_NOT_FOUND",
            )
        return found[0]

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
        return await self._download_uri_of(found.id, timeout, metadata)

    async def _download_uri_of(
        self, version_id: str | None, timeout: float | None, metadata: Metadata | None
    ) -> str:
        """get_model_version_download_uri of the version with this id."""
        request = proto(
            api.GetModelVersionDownloadUriRequest, project=self.project, id=version_id or ""
        )
        reply = await self._transport.unary(
            self._stub.GetModelVersionDownloadUri, request, timeout=timeout, metadata=metadata
        )
        return str(reply.uri)

    async def _model_id(self, name: str, timeout: float | None, metadata: Metadata | None) -> str:
        return (await self.get_registered_model(name, timeout=timeout, metadata=metadata)).id or ""


def _as_mlflow(version: ModelVersion, model_name: str) -> MlflowModelVersion:
    """A Kubeflow-shaped version re-shaped as MLflow's (`name` the model's): the name the
    answer gives, which a rename since the caller looked `model_name` up has changed."""
    fields = {f: getattr(version, f) for f in version.__dataclass_fields__ if f != "name"}
    fields["registered_model_name"] = fields["registered_model_name"] or model_name
    return MlflowModelVersion(
        name=fields["registered_model_name"], version_name=version.name, **fields
    )


def _tags_as_text(tags: Mapping[str, Any] | None) -> dict[str, str]:
    """MLflow's tags argument: names to values, each value sent as its text."""
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise invalid_argument("tags", f"a {type(tags).__name__} is no mapping of names to values")
    for key in tags:
        if not isinstance(key, str):
            raise invalid_argument("tags", f"key {key!r} is no string")
    return {key: str(value) for key, value in tags.items()}
