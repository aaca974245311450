"""Lineage in one call each: what produced a model version (registry client), and which
runs used an artifact (tracking client).

Both read through the client's channel: the registry's version names its run by id,
the tracking service holds the run's inputs and params (docs/models.md).
"""

from __future__ import annotations

from typing import Any, Protocol

from .. import _names as names
from .._argument_error import invalid_argument
from .._transport import Transport
from ..exceptions import NotFoundError
from ..tracking.v1 import tracking_service_pb2 as tracking_api
from ..tracking.v1 import tracking_service_pb2_grpc
from ..types import _tracking
from ..types._journey import ModelVersionLineage
from ..types._registry import ModelVersion
from ..types._tracking import Run, ViewType

PAGE_SIZE = 1000
# Experiments named per SearchRuns call when looking through a whole project: as many
# as a call may name. A search for a URI few runs used reads those runs from the
# service's index of input URIs, whatever the experiments named, so fewer, larger calls
# cost the least; SearchRuns names at least one experiment, hence the listing of them.
EXPERIMENTS_PER_SEARCH = 1000


class _Registry(Protocol):
    _transport: Transport

    async def get_model_version(self, name: str, version: int | str) -> ModelVersion: ...


class _Tracking(Protocol):
    _transport: Transport
    _stub: Any

    @property
    def project(self) -> str: ...


class ModelVersionLineageMixin:
    """Mixed into ModelRegistryAPIClient."""

    async def get_model_version_lineage(
        self: _Registry, name: str, version: int | str
    ) -> ModelVersionLineage:
        """What produced a version: the version, its source run, the run's inputs (what
        it used) and params.

        Raises:
            NotFoundError: no such model or version, or its run no longer exists.
        """
        found = await self.get_model_version(name, version)
        if not found.source_run_id:
            return ModelVersionLineage(found, None)
        # A run id of Cairn's (what GetRun takes); a version may name another system's run.
        if not names.RUN_ID.fullmatch(found.source_run_id):
            raise NotFoundError(
                f"version {found.version} of {name!r} names the run {found.source_run_id!r}, "
                "which is no run id of Cairn's",
                reason="RUN_NOT_FOUND",
            )
        stub = tracking_service_pb2_grpc.TrackingServiceStub(self._transport.channel)
        request = tracking_api.GetRunRequest(
            project=self._transport.project, run_id=found.source_run_id
        )
        run = _tracking.run_from_proto((await self._transport.unary(stub.GetRun, request)).run)
        return ModelVersionLineage(found, run, list(run.inputs), dict(run.data.params))


class RunLineage:
    """Mixed into TrackingClient."""

    async def get_runs_using(
        self: _Tracking,
        uri: Any,
        *,
        run_view_type: int | str = ViewType.ALL,
    ) -> list[Run]:
        """Every run of the project, in any experiment, that used uri: runs with an input
        (`log_inputs`) of exactly that URI, newest first.

        Args:
            uri: the URI as it was logged, or anything with an `artifact_uri` (an
                ObjectInfo, a ModelInfo: its artifact_uri, not its model_uri) or a
                `uri` (a versioned artifact, a RunInput).
            run_view_type: ALL (default: a deleted run used it too), ACTIVE_ONLY or
                DELETED_ONLY.

        Raises:
            InvalidArgumentError: uri is neither text nor has an `artifact_uri` or a
                `uri` of text (None, a number, a local Path, bytes).
        """
        text = _uri_of(uri)
        experiments = await _every_experiment(self)
        runs: list[Run] = []
        for start in range(0, len(experiments), EXPERIMENTS_PER_SEARCH):
            request = tracking_api.SearchRunsRequest(
                project=self.project,
                experiment_ids=experiments[start : start + EXPERIMENTS_PER_SEARCH],
                filter="inputs.uri = '{}'".format(text.replace("'", "''")),
                view_type=_tracking.view_type_to_proto(run_view_type, "run_view_type"),
                page_size=PAGE_SIZE,
                columnar=True,
            )
            runs += await _every_run(self, request)
        return sorted(runs, key=lambda r: r.info.start_time, reverse=True)


def _uri_of(value: Any) -> str:
    """The URI value names: itself, its artifact_uri (first: an ObjectInfo's uri is
    where one backend keeps the bytes) or its uri."""
    if isinstance(value, str):
        return value
    for attribute in ("artifact_uri", "uri"):
        found = getattr(value, attribute, None)
        if isinstance(found, str) and found:
            return found
    raise invalid_argument(
        "uri",
        f"{value!r:.200} is no URI: give it as text, or an object with an `artifact_uri` "
        "(ObjectInfo, ModelInfo) or a `uri` (ActiveArtifact, VersionedArtifact, RunInput)",
    )


async def _every_experiment(client: _Tracking) -> list[str]:
    """Ids of the project's experiments, deleted ones too (their runs used things)."""
    request = tracking_api.SearchExperimentsRequest(
        project=client.project,
        view_type=_tracking.view_type_to_proto(ViewType.ALL),
        page_size=PAGE_SIZE,
    )
    return await client._transport.every_page(
        client._stub.SearchExperiments,
        request,
        lambda reply: [e.experiment_id for e in reply.experiments],
    )


async def _every_run(client: _Tracking, request: tracking_api.SearchRunsRequest) -> list[Run]:
    return await client._transport.every_page(
        client._stub.SearchRuns, request, _tracking.runs_from_search
    )
