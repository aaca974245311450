"""The Kubeflow-shaped half of the registry client: upserts, lookups by id and params, lists."""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO, Any, cast

from google.protobuf.field_mask_pb2 import FieldMask

from .._argument_error import invalid_argument
from .._base import BaseClient
from .._headers import Metadata
from .._tables import millis, print_table
from ..exceptions import NotFoundError
from ..registry.v1 import registry_pb2 as pb
from ..registry.v1 import registry_service_pb2 as api
from ..registry.v1 import registry_service_pb2_grpc
from ..types import _registry as types
from ..types._arguments import proto
from ..types._paging import (
    ListOptions,
    OrderByField,
    PagedList,
    Pager,
    order_field,
    page_size_of,
)
from ..types._registry import (
    Artifact,
    DocArtifact,
    MlflowModelVersion,
    ModelArtifact,
    ModelVersion,
    RegisteredModel,
)

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


def _given(item: Any, fields: list[str]) -> FieldMask:
    """The update mask of an upsert: the fields the item gives, not None.

    None leaves a field as stored, as Kubeflow's client leaves out the fields it holds
    as None: an item made with an id and one field changes that field, not every other
    to empty. "" empties a text field, {} the custom properties.
    """
    return FieldMask(
        paths=[
            path for path in fields if getattr(item, path.removeprefix("model."), None) is not None
        ]
    )


_ORDER = {
    OrderByField.CREATE_TIME: "create_time",
    OrderByField.UPDATE_TIME: "update_time",
    OrderByField.ID: "id",
}


class RegistryCore(BaseClient):
    """Kubeflow Model Registry's methods; `ModelRegistryAPIClient` adds MLflow's."""

    def _bind(self, channel: Any) -> None:
        self._stub = registry_service_pb2_grpc.RegistryServiceStub(channel)

    async def _maybe(
        self, method: Any, request: Any, timeout: float | None, metadata: Metadata | None
    ) -> Any:
        """The reply, or None when the server answers NOT_FOUND (Kubeflow's `find`)."""
        try:
            return await self._transport.unary(method, request, timeout=timeout, metadata=metadata)
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
        _given_as(registered_model, RegisteredModel, "registered_model")
        message = types.registered_model_to_proto(registered_model, self.project)
        if registered_model.id:
            request: Any = proto(
                api.UpdateRegisteredModelRequest,
                registered_model=message,
                update_mask=_given(registered_model, _MODEL_FIELDS),
            )
            reply = await self._transport.unary(
                self._stub.UpdateRegisteredModel, request, timeout=timeout, metadata=metadata
            )
        else:
            reply = await self._transport.unary(
                self._stub.CreateRegisteredModel,
                proto(api.CreateRegisteredModelRequest, registered_model=message),
                timeout=timeout,
                metadata=metadata,
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
        _given_as(model_version, ModelVersion, "model_version")
        message = types.model_version_to_proto(
            model_version, self.project, str(registered_model_id or "")
        )
        if model_version.id:
            fields = _VERSION_FIELDS
            if isinstance(model_version, MlflowModelVersion) and not model_version.version_name:
                # Its name is the model's; its own is not given.
                fields = [path for path in fields if path != "name"]
            request: Any = proto(
                api.UpdateModelVersionRequest,
                model_version=message,
                update_mask=_given(model_version, fields),
            )
            reply = await self._transport.unary(
                self._stub.UpdateModelVersion, request, timeout=timeout, metadata=metadata
            )
        else:
            reply = await self._transport.unary(
                self._stub.CreateModelVersion,
                proto(api.CreateModelVersionRequest, model_version=message),
                timeout=timeout,
                metadata=metadata,
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
        """Creates a model artifact, attached to a version when one is given, or updates it
        (a DocArtifact: `upsert_model_version_artifact`)."""
        _given_as(model_artifact, ModelArtifact, "model_artifact")
        stored = await self._upsert_artifact(model_artifact, model_version_id, timeout, metadata)
        # The server refuses an update that would make a doc artifact of it (INVALID_ARGUMENT
        # on artifact.kind, nothing written), so what it answers is a model artifact.
        return cast(ModelArtifact, stored)

    async def upsert_model_version_artifact(
        self,
        artifact: Artifact,
        model_version_id: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> Artifact:
        """Creates or updates a model or doc artifact of a version."""
        _given_as(artifact, ModelArtifact | DocArtifact, "artifact")
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
            request: Any = proto(
                api.UpdateArtifactRequest,
                artifact=message,
                update_mask=_given(artifact, _ARTIFACT_FIELDS),
            )
            reply = await self._transport.unary(
                self._stub.UpdateArtifact, request, timeout=timeout, metadata=metadata
            )
        else:
            reply = await self._transport.unary(
                self._stub.CreateArtifact,
                proto(api.CreateArtifactRequest, artifact=message),
                timeout=timeout,
                metadata=metadata,
            )
        return types.artifact_from_proto(reply.artifact)

    # Kubeflow: queries by id and by params (None when nothing matches)

    async def get_registered_model_by_id(
        self, id: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> RegisteredModel | None:
        reply = await self._maybe(
            self._stub.GetRegisteredModel,
            proto(api.GetRegisteredModelRequest, project=self.project, id=str(id or "")),
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
            self._stub.GetModelVersion,
            proto(api.GetModelVersionRequest, project=self.project, id=str(model_version_id or "")),
            timeout,
            metadata,
        )
        return types.model_version_from_proto(reply.model_version) if reply else None

    async def get_model_artifact_by_id(
        self, id: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> ModelArtifact | None:
        reply = await self._maybe(
            self._stub.GetArtifact,
            proto(api.GetArtifactRequest, project=self.project, id=str(id or "")),
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
            proto(api.FindRegisteredModelRequest, project=self.project, name=name)
            if name
            else proto(
                api.FindRegisteredModelRequest, project=self.project, external_id=external_id
            )
        )
        reply = await self._maybe(self._stub.FindRegisteredModel, request, timeout, metadata)
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
            request = proto(
                api.FindModelVersionRequest, project=self.project, external_id=external_id
            )
        elif registered_model_id and version:
            request = proto(
                api.FindModelVersionRequest,
                project=self.project,
                registered_model_id=str(registered_model_id),
                name=version,
            )
        else:
            raise invalid_argument(
                "external_id", "give external_id, or registered_model_id and version"
            )
        reply = await self._maybe(self._stub.FindModelVersion, request, timeout, metadata)
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
            request = proto(api.FindArtifactRequest, project=self.project, external_id=external_id)
        elif name:
            request = proto(
                api.FindArtifactRequest,
                project=self.project,
                model_version_id=str(model_version_id or ""),
                name=name,
            )
        else:
            raise invalid_argument(
                "external_id", "give external_id, or name (and model_version_id)"
            )
        reply = await self._maybe(self._stub.FindArtifact, request, timeout, metadata)
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
        request = proto(
            api.ListRegisteredModelsRequest, project=self.project, **_list_fields(options)
        )
        reply = await self._transport.unary(
            self._stub.ListRegisteredModels, request, timeout=timeout, metadata=metadata
        )
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
        """One page of the model's versions (20 by default).

        Raises:
            InvalidArgumentError: no model id (the raw ListModelVersions lists every
                model's versions without one).
        """
        if not registered_model_id:
            raise invalid_argument("registered_model_id", "must not be empty")
        options = options or ListOptions()
        request = proto(
            api.ListModelVersionsRequest,
            project=self.project,
            registered_model_id=str(registered_model_id),
            **_list_fields(options),
        )
        reply = await self._transport.unary(
            self._stub.ListModelVersions, request, timeout=timeout, metadata=metadata
        )
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
        if not model_version_id:  # the raw list would be the whole project's artifacts
            raise invalid_argument("model_version_id", "must not be empty")
        return await self._artifacts(
            model_version_id, pb.ARTIFACT_KIND_UNSPECIFIED, options, timeout, metadata
        )

    async def show_models(
        self,
        task_id: str | None = None,
        *,
        file: IO[str] | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        """Prints a project's registered models as a table (to stdout, or file).

        ML cube's `show_models(task_id)` lists a task's models; Cairn has no tasks, and
        a project plays their part.

        Args:
            task_id: the project whose models to show, as ML cube's call takes its task
                (positionally too); None: the client's project.
        """
        client = self
        if task_id is not None and task_id != self.project:
            transport = self._transport.for_project(task_id, timeout=self._transport.timeout)
            client = type(self)(transport)
        await _show_models(client, file, timeout, metadata)

    # Every item of a project's list, all pages (whole-project reads: Devo's get_models)

    async def _every_registered_model(self, page_size: int) -> list[RegisteredModel]:
        request = proto(api.ListRegisteredModelsRequest, project=self.project, page_size=page_size)
        return await self._transport.every_page(
            self._stub.ListRegisteredModels,
            request,
            lambda reply: [types.registered_model_from_proto(m) for m in reply.registered_models],
        )

    async def _every_model_version(self, page_size: int) -> list[ModelVersion]:
        request = proto(api.ListModelVersionsRequest, project=self.project, page_size=page_size)
        return await self._transport.every_page(
            self._stub.ListModelVersions,
            request,
            lambda reply: [types.model_version_from_proto(v) for v in reply.model_versions],
        )

    async def _every_model_artifact(self, page_size: int) -> list[ModelArtifact]:
        request = proto(
            api.ListArtifactsRequest,
            project=self.project,
            kind=pb.ARTIFACT_KIND_MODEL,
            page_size=page_size,
        )
        found = await self._transport.every_page(
            self._stub.ListArtifacts,
            request,
            lambda reply: [types.artifact_from_proto(a) for a in reply.artifacts],
        )
        return [artifact for artifact in found if isinstance(artifact, ModelArtifact)]

    async def _artifacts(
        self,
        model_version_id: str | None,
        kind: int,
        options: ListOptions | None,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> PagedList[Artifact]:
        options = options or ListOptions()
        request = proto(
            api.ListArtifactsRequest,
            project=self.project,
            model_version_id=str(model_version_id or ""),
            kind=kind,  # type: ignore[arg-type]
            **_list_fields(options),
        )
        reply = await self._transport.unary(
            self._stub.ListArtifacts, request, timeout=timeout, metadata=metadata
        )
        return _page(options, [types.artifact_from_proto(a) for a in reply.artifacts], reply)


async def _show_models(
    client: RegistryCore,
    file: IO[str] | None,
    timeout: float | None,
    metadata: Metadata | None,
) -> None:
    models = Pager(
        lambda options: client.get_registered_models(options, timeout=timeout, metadata=metadata)
    )
    rows = [
        (m.id, m.name, m.owner, m.description, millis(m.create_time_since_epoch))
        async for m in models.limit(100)
    ]
    columns = ["Model ID", "Name", "Owner", "Description", "Created (UTC)"]
    print_table(f"Models of project {client.project}", columns, rows, file)


def _given_as(value: object, kind: Any, argument: str) -> None:
    """Refuses an upsert's object of another type (a name where a RegisteredModel is
    expected, a DocArtifact where only a ModelArtifact is), which failed with a raw
    AttributeError as it was read, or was stored as what it was."""
    if not isinstance(value, kind):
        wanted = " or ".join(k.__name__ for k in getattr(kind, "__args__", (kind,)))
        raise invalid_argument(argument, f"must be a {wanted}, not a {type(value).__name__}")


def _exactly_one(**given: str | None) -> None:
    if sum(1 for v in given.values() if v) != 1:
        raise invalid_argument(next(iter(given)), f"give exactly one of {', '.join(given)}")


def _list_fields(options: ListOptions) -> dict[str, Any]:
    order = ""
    field = order_field(options.order_by)
    if field is not None:
        order = f"{_ORDER[field]} {'asc' if options.is_asc else 'desc'}"
    elif not options.is_asc:
        order = "create_time desc"
    return {
        "page_size": page_size_of(options),
        "page_token": options.next_page_token or "",
        "order_by": order,
    }


def one_order(order_by: Sequence[str] | None) -> str:
    if not order_by:
        return ""
    if len(order_by) > 1:
        raise invalid_argument("order_by", "registry lists order by one field")
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
