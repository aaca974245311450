"""`TrackingClient`: experiment tracking with MLflow's method names and arguments."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .. import _names as names
from .._argument_error import invalid_argument
from .._base import BaseClient
from .._headers import REQUEST_ID_HEADER, Metadata
from .._numbers import real, whole, whole_or_zero
from .._read_ahead import ReadAhead
from ..exceptions import NotFoundError
from ..tracking.v1 import tracking_pb2 as pb
from ..tracking.v1 import tracking_service_pb2 as api
from ..tracking.v1 import tracking_service_pb2_grpc
from ..types import _tracking as types
from ..types._arguments import proto
from ..types._paging import (
    ListOptions,
    OrderByField,
    PagedList,
    gathered,
    order_field,
    order_keys,
)
from ..types._tracking import Experiment, Metric, Param, Run, RunInput, RunStatus, RunTag, ViewType
from . import journal
from ._experiment_ids import experiment_ids_of
from .active_run import ActiveRun
from .lineage import RunLineage
from .run_artifacts import RunArtifacts
from .run_media import RunMedia
from .run_models import RunModels
from .run_operations import BackgroundWrites, RunOperations
from .run_tables import RunTables

SEARCH_MAX_RESULTS_DEFAULT = 1000
# The most results one search_runs or search_experiments gathers, as in MLflow.
SEARCH_MAX_RESULTS_THRESHOLD = 50_000
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"
T = TypeVar("T")
M = TypeVar("M", pb.Param, pb.Tag)
_EXPERIMENT_ORDER = {
    OrderByField.CREATE_TIME: "creation_time",
    OrderByField.UPDATE_TIME: "last_update_time",
    OrderByField.ID: "experiment_id",
}
_RUN_ORDER = {
    OrderByField.CREATE_TIME: "attributes.start_time",
    OrderByField.ID: "attributes.run_id",
}


class TrackingClient(
    BaseClient, RunArtifacts, RunMedia, RunModels, RunLineage, RunTables, BackgroundWrites
):
    """Async client of `cairn.tracking.v1.TrackingService`.

    Method names and arguments follow MLflow's `MlflowClient`. Every method that makes
    one call also takes keyword-only `timeout=` (seconds) and `metadata=` (extra headers)
    for it; the artifact, media, model and lineage methods, which make several calls
    (each with the client's default timeout), take neither.
    The artifact methods (`log_artifact`, `log_artifacts`, `log_text`, `log_dict`,
    `log_image`, `log_table`, `load_table`, `list_artifacts`, `download_artifacts`) use
    the artifact service on the same channel;
    the model methods (`log_model`, `load_model`) the artifact and registry services.
    """

    def _bind(self, channel: Any) -> None:
        self._stub = tracking_service_pb2_grpc.TrackingServiceStub(channel)

    # Experiments

    async def create_experiment(
        self,
        name: str,
        artifact_location: str | None = None,
        tags: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> str:
        """Creates an experiment; returns its id.

        Raises:
            AlreadyExistsError: an experiment of that name exists (even deleted).
        """
        request = proto(
            api.CreateExperimentRequest,
            project=self.project,
            name=name,
            artifact_location=artifact_location or "",
            tags=_tags(tags),
        )
        reply = await self._transport.unary(
            self._stub.CreateExperiment, request, timeout=timeout, metadata=metadata
        )
        return str(reply.experiment.experiment_id)

    async def get_experiment(
        self, experiment_id: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> Experiment:
        """Raises NotFoundError when there is no such experiment."""
        request = proto(
            api.GetExperimentRequest, project=self.project, experiment_id=str(experiment_id)
        )
        reply = await self._transport.unary(
            self._stub.GetExperiment, request, timeout=timeout, metadata=metadata
        )
        return types.experiment_from_proto(reply.experiment)

    async def get_experiment_by_name(
        self, name: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> Experiment | None:
        """The experiment of that name, or None."""
        request = proto(api.GetExperimentByNameRequest, project=self.project, name=name)
        try:
            reply = await self._transport.unary(
                self._stub.GetExperimentByName, request, timeout=timeout, metadata=metadata
            )
        except NotFoundError:
            return None
        return types.experiment_from_proto(reply.experiment)

    async def search_experiments(
        self,
        view_type: int | str = ViewType.ACTIVE_ONLY,
        max_results: int | None = SEARCH_MAX_RESULTS_DEFAULT,
        filter_string: str | None = None,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
        *,
        options: ListOptions | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> PagedList[Experiment]:
        """Experiments, up to max_results of them.

        Args:
            view_type: ACTIVE_ONLY, DELETED_ONLY or ALL.
            max_results: how many to answer (1,000 by default, at most 50,000 as in
                MLflow), gathered from server pages of 1,000 until one comes back cut
                short to fit its message (then fewer, with the token of the rest); with
                options, their limit is one page's size (at most 1,000).
            filter_string: e.g. "name LIKE 'churn%' AND tags.team = 'growth'".
            order_by: keys among "name", "creation_time", "last_update_time" and
                "experiment_id", each optionally followed by ASC or DESC, each at most
                once, e.g. ["name ASC", "creation_time DESC"].
            page_token: the next_page_token of the previous page.
            options: ListOptions (for Pager); overrides max_results, page_token, order_by.
        """
        # The wire carries the keys in one string, separated by commas.
        order = ", ".join(order_keys(order_by))
        if options is not None:
            max_results, page_token, chosen = _apply_options(options, _EXPERIMENT_ORDER)
            order = order if chosen is None else chosen

        async def page(size: int, token: str) -> tuple[list[Experiment], str]:
            request = proto(
                api.SearchExperimentsRequest,
                project=self.project,
                filter=filter_string or "",
                order_by=order,
                view_type=types.view_type_to_proto(view_type),
                page_size=size,
                page_token=token,
            )
            reply = await self._transport.unary(
                self._stub.SearchExperiments, request, timeout=timeout, metadata=metadata
            )
            found = [types.experiment_from_proto(e) for e in reply.experiments]
            return found, reply.next_page_token

        return await _searched(page, options, max_results, page_token)

    async def rename_experiment(
        self,
        experiment_id: str,
        new_name: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        request = proto(
            api.RenameExperimentRequest,
            project=self.project,
            experiment_id=str(experiment_id),
            new_name=new_name,
        )
        await self._transport.unary(
            self._stub.RenameExperiment, request, timeout=timeout, metadata=metadata
        )

    async def delete_experiment(
        self, experiment_id: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> None:
        """Soft-deletes the experiment; its runs are hidden with it until restored."""
        request = proto(
            api.DeleteExperimentRequest, project=self.project, experiment_id=str(experiment_id)
        )
        await self._transport.unary(
            self._stub.DeleteExperiment, request, timeout=timeout, metadata=metadata
        )

    async def restore_experiment(
        self, experiment_id: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> None:
        request = proto(
            api.RestoreExperimentRequest, project=self.project, experiment_id=str(experiment_id)
        )
        await self._transport.unary(
            self._stub.RestoreExperiment, request, timeout=timeout, metadata=metadata
        )

    async def set_experiment_tag(
        self,
        experiment_id: str,
        key: str,
        value: Any,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        request = proto(
            api.SetExperimentTagRequest,
            project=self.project,
            experiment_id=str(experiment_id),
            key=key,
            value=str(value),
        )
        await self._transport.unary(
            self._stub.SetExperimentTag, request, timeout=timeout, metadata=metadata
        )

    async def delete_experiment_tag(
        self,
        experiment_id: str,
        key: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        request = proto(
            api.DeleteExperimentTagRequest,
            project=self.project,
            experiment_id=str(experiment_id),
            key=key,
        )
        await self._transport.unary(
            self._stub.DeleteExperimentTag, request, timeout=timeout, metadata=metadata
        )

    # Runs

    async def create_run(
        self,
        experiment_id: str,
        start_time: int | None = None,
        tags: dict[str, Any] | None = None,
        run_name: str | None = None,
        *,
        parent_run_id: str | None = None,
        user_id: str | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> Run:
        """Starts a run (status RUNNING); a name is generated when none is given."""
        request = proto(
            api.CreateRunRequest,
            project=self.project,
            experiment_id=str(experiment_id),
            run_name=run_name or "",
            user_id=user_id or "",
            start_time_ms=whole_or_zero(start_time, "start_time"),
            tags=_tags(tags),
            parent_run_id=parent_run_id or "",
        )
        reply = await self._transport.unary(
            self._stub.CreateRun, request, timeout=timeout, metadata=metadata
        )
        return types.run_from_proto(reply.run)

    async def get_run(
        self, run_id: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> Run:
        """Raises NotFoundError when there is no such run."""
        reply = await self._transport.unary(
            self._stub.GetRun,
            proto(api.GetRunRequest, project=self.project, run_id=run_id),
            timeout=timeout,
            metadata=metadata,
        )
        return types.run_from_proto(reply.run)

    async def get_parent_run(
        self, run_id: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> Run | None:
        """MLflow's: the run its tag "mlflow.parentRunId" names, as MLflow reads it (a
        run made with `create_run(parent_run_id=...)` carries the tag), or else its
        `parent_run_id`; None when it has neither.

        Raises:
            NotFoundError: there is no such run.
        """
        run = await self.get_run(run_id, timeout=timeout, metadata=metadata)
        # The tag first: MLflow's search for a run's children follows the tag, set later too.
        tagged = run.data.tags.get(MLFLOW_PARENT_RUN_ID)
        parent = tagged or run.info.parent_run_id
        if not parent:
            return None
        named = f"{parent!r} (its tag {MLFLOW_PARENT_RUN_ID})" if tagged else parent
        no_parent = NotFoundError(
            f"run {run_id}'s parent, {named}, names no run", reason="RUN_NOT_FOUND"
        )
        if not names.RUN_ID.fullmatch(parent):  # the tag is kept unchecked, as in MLflow
            raise no_parent
        try:
            return await self.get_run(parent, timeout=timeout, metadata=metadata)
        except NotFoundError:
            raise no_parent from None

    async def update_run(
        self,
        run_id: str,
        status: RunStatus | str | None = None,
        name: str | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        request = proto(
            api.UpdateRunRequest,
            project=self.project,
            run_id=run_id,
            run_name=name or "",
            status=types.status_to_proto(status) if status else None,
        )
        await self._transport.unary(
            self._stub.UpdateRun, request, timeout=timeout, metadata=metadata
        )

    async def set_terminated(
        self,
        run_id: str,
        status: RunStatus | str | None = None,
        end_time: int | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        """Ends a run: FINISHED unless another status is given, at end_time or now (the
        server's time as it stores the end: a repeat under the same request id is the
        same request)."""
        request = proto(
            api.UpdateRunRequest,
            project=self.project,
            run_id=run_id,
            status=types.status_to_proto(status or RunStatus.FINISHED),
            # Sent even when 0, which is now: left unset, the run's end would not change.
            end_time_ms=whole_or_zero(end_time, "end_time"),
        )
        await self._transport.unary(
            self._stub.UpdateRun, request, timeout=timeout, metadata=metadata
        )

    async def delete_run(
        self, run_id: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> None:
        await self._transport.unary(
            self._stub.DeleteRun,
            proto(api.DeleteRunRequest, project=self.project, run_id=run_id),
            timeout=timeout,
            metadata=metadata,
        )

    async def restore_run(
        self, run_id: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> None:
        await self._transport.unary(
            self._stub.RestoreRun,
            proto(api.RestoreRunRequest, project=self.project, run_id=run_id),
            timeout=timeout,
            metadata=metadata,
        )

    async def search_runs(
        self,
        experiment_ids: Sequence[str | int] | str | int,
        filter_string: str = "",
        run_view_type: int | str = ViewType.ACTIVE_ONLY,
        max_results: int | None = SEARCH_MAX_RESULTS_DEFAULT,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
        *,
        options: ListOptions | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> PagedList[Run]:
        """Runs matching a filter, up to max_results of them.

        Args:
            experiment_ids: experiments to search.
            filter_string: e.g. "metrics.acc > 0.9 and params.model = 'cnn'"; see
                docs/filters.md for OR, parentheses, IN, LIKE and IS NULL.
            run_view_type: ACTIVE_ONLY, DELETED_ONLY or ALL.
            max_results: how many to answer (1,000 by default, at most 50,000 as in
                MLflow), gathered from server pages of 1,000 until one comes back cut
                short to fit its message (then fewer, with the token of the rest); with
                options, their limit is one page's size (at most 1,000).
            order_by: e.g. ["metrics.acc DESC", "params.lr"]; NaN and missing values
                come last either way. Default: newest start time first.
            page_token: the next_page_token of the previous page.
            options: ListOptions (for Pager); overrides max_results, page_token, order_by.

        Raises:
            InvalidArgumentError: a bad filter, naming the position and the problem.
        """
        order = order_keys(order_by)
        if options is not None:
            max_results, page_token, chosen = _apply_options(options, _RUN_ORDER)
            order = order if chosen is None else [chosen]
        ids = experiment_ids_of(experiment_ids)
        view = types.view_type_to_proto(run_view_type, "run_view_type")

        async def page(size: int, token: str) -> tuple[list[Run], str]:
            request = proto(
                api.SearchRunsRequest,
                project=self.project,
                experiment_ids=ids,
                filter=filter_string,
                order_by=order,
                view_type=view,
                page_size=size,
                page_token=token,
                columnar=True,
            )
            reply = await self._transport.unary(
                self._stub.SearchRuns, request, timeout=timeout, metadata=metadata
            )
            return types.runs_from_search(reply), reply.next_page_token

        return await _searched(page, options, max_results, page_token)

    def start_run(
        self,
        experiment_id: str,
        *,
        run_name: str | None = None,
        tags: dict[str, Any] | None = None,
        batch_size: int = 10_000,
        max_buffered: int = 100_000,
        flush_timeout: float = 60.0,
        journal_dir: str | os.PathLike[str] | None = None,
        used_artifacts: Iterable[Any] = (),
        send_interval: float = 5.0,
    ) -> ActiveRun:
        """A run for `async with`: metrics are buffered and sent in batches meanwhile,
        retried through outages.

        `used_artifacts` (ML Aide's name) are logged as the run's inputs when it starts:
        `RunInput`s, or artifact versions (`ActiveArtifact`, `VersionedArtifact`: their
        `as_input()` is used).
        Anything else, or a version `as_input` refuses (a type too long for a kind), is
        an InvalidArgumentError raised here, before a run is made.

        The run ends FINISHED, or FAILED when the block raises (KILLED if cancelled).
        Points are sent when `batch_size` of them wait (fewer, when more would take past
        768 KiB: a server's smallest message is 1 MiB), and what waits at least every
        `send_interval` seconds. `max_buffered` bounds the buffer: `log_metric` waits
        when it is full. Leaving
        the block waits up to `flush_timeout` seconds for the rest to be sent; what is
        still unsent then is written to a journal file under `journal_dir` (`~`
        expanded, and made absolute as the run starts; default
        `~/.cache/cairn/journal`), named by `ActiveRun.journal`, for `sync_journal`.
        While sends fail, what waits is journaled there meanwhile, so a process killed
        during an outage leaves it too.
        """
        return ActiveRun(
            self,
            experiment_id,
            run_name=run_name,
            tags=tags,
            batch_size=batch_size,
            max_buffered=max_buffered,
            flush_timeout=flush_timeout,
            journal_dir=Path(journal_dir) if journal_dir else journal.default_directory(),
            inputs=_used_inputs(used_artifacts),
            send_interval=send_interval,
        )

    async def sync_journal(self, path: str | os.PathLike[str] | None = None) -> int:
        """Stores what runs left in their journals: one file, or every file of a
        directory (default `~/.cache/cairn/journal`), each removed once stored. Every
        batch is sent with the request id it was first sent with, so nothing the server
        stored before the outage is stored twice. Returns the points sent (0 when the
        default directory does not exist: no run ever needed it).

        Raises:
            FileNotFoundError: path names nothing.
            CairnError: a file could not be stored (its run deleted, say), is no
                journal (INVALID_JOURNAL) or cannot be read (JOURNAL_UNREADABLE); the
                others were stored all the same. A file stored that cannot be removed
                is told in a warning only.
        """
        if path is None and not journal.default_directory().exists():
            return 0
        return await journal.replay(self, journal.sync_path(path))

    def for_project(self, project: str) -> TrackingClient:
        """A client of the same connection, in another project."""
        return TrackingClient(self._transport.for_project(project, timeout=self._transport.timeout))

    # Logging

    async def log_metric(
        self,
        run_id: str,
        key: str,
        value: float,
        timestamp: int | None = None,
        step: int | None = None,
        synchronous: bool | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> RunOperations | None:
        """Logs one point, at timestamp or now (the server's time as it stores the point:
        a repeat under the same request id is the same request). With synchronous=False
        it returns at once a RunOperations whose wait() waits for the write
        (docs/client.md, "MLflow")."""
        metric = proto(
            pb.Metric,
            key=key,
            value=real(value, "value"),
            step=whole_or_zero(step, "step"),
        )
        if timestamp is not None:
            metric.timestamp_ms = whole(timestamp, "timestamp")
        request = proto(api.LogMetricRequest, project=self.project, run_id=run_id, metric=metric)
        return await self._write(
            self._transport.unary(
                self._stub.LogMetric, request, timeout=timeout, metadata=metadata
            ),
            synchronous,
            request.ByteSize,
        )

    async def log_param(
        self,
        run_id: str,
        key: str,
        value: Any,
        synchronous: bool | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> Any:
        """Logs a param; returns value (a RunOperations with synchronous=False, as in
        MLflow). Logging another value for the key later raises
        FailedPreconditionError (reason PARAM_ALREADY_LOGGED)."""
        request = proto(
            api.LogParamRequest,
            project=self.project,
            run_id=run_id,
            param=proto(pb.Param, key=key, value=str(value)),
        )
        started = await self._write(
            self._transport.unary(self._stub.LogParam, request, timeout=timeout, metadata=metadata),
            synchronous,
            request.ByteSize,
        )
        return value if started is None else started

    async def set_tag(
        self,
        run_id: str,
        key: str,
        value: Any,
        synchronous: bool | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> RunOperations | None:
        request = proto(
            api.SetTagRequest,
            project=self.project,
            run_id=run_id,
            tag=proto(pb.Tag, key=key, value=str(value)),
        )
        return await self._write(
            self._transport.unary(self._stub.SetTag, request, timeout=timeout, metadata=metadata),
            synchronous,
            request.ByteSize,
        )

    async def delete_tag(
        self,
        run_id: str,
        key: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        request = proto(api.DeleteTagRequest, project=self.project, run_id=run_id, key=key)
        await self._transport.unary(
            self._stub.DeleteTag, request, timeout=timeout, metadata=metadata
        )

    async def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Sequence[Param] = (),
        tags: Sequence[RunTag] = (),
        synchronous: bool | None = None,
        *,
        request_id: str | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> RunOperations | None:
        """Logs metrics, params and tags atomically: all of them or none.

        The batch's request id is request_id, else the `x-cairn-request-id` of metadata,
        else a new one; it is sent with every retry, so a batch the client sends again, or
        a caller sends again under its id, is applied once.
        """
        request = proto(
            api.LogBatchRequest,
            project=self.project,
            run_id=run_id,
            request_id=request_id or _request_id_of(metadata) or uuid.uuid4().hex,
            metrics=_columns(metrics),
            params=_pairs(params, pb.Param, "params"),
            tags=_pairs(tags, pb.Tag, "tags"),
        )
        return await self._write(
            self._transport.unary(self._stub.LogBatch, request, timeout=timeout, metadata=metadata),
            synchronous,
            request.ByteSize,
        )

    async def log_inputs(
        self,
        run_id: str,
        inputs: Iterable[RunInput],
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        """Records what the run used (its input lineage)."""
        request = proto(
            api.LogInputsRequest,
            project=self.project,
            run_id=run_id,
            inputs=[
                proto(
                    pb.RunInput,
                    kind=i.kind,
                    name=i.name,
                    uri=i.uri,
                    digest=i.digest,
                    context=i.context,
                )
                for i in inputs
            ],
        )
        await self._transport.unary(
            self._stub.LogInputs, request, timeout=timeout, metadata=metadata
        )

    # Metric history

    async def get_metric_history(
        self,
        run_id: str,
        key: str,
        *,
        max_points: int | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> list[Metric]:
        """Every point of one metric in step order, or at most max_points of them
        (keeping the first, last, smallest and largest). A stream cut midway is read
        again from its start (docs/client.md, "Retries apply a write once")."""
        chunks = await self._transport.every_response(
            self._stub.GetMetricHistory,
            self._history_request(run_id, key, max_points),
            lambda chunk: types.metrics_from_columns(chunk.points),
            timeout=timeout,
            metadata=metadata,
        )
        return [point for chunk in chunks for point in chunk]

    def iter_metric_history(
        self,
        run_id: str,
        key: str,
        *,
        max_points: int | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> ReadAhead[Metric]:
        """Like get_metric_history, one point at a time, as the server streams them.

        The stream is read ahead of the loop over it, so however long the loop takes
        over a point, the server never waits on it; points not taken yet wait in memory.
        A stream cut after points were taken raises UnavailableError: call again.
        """
        return ReadAhead(self._history_chunks(run_id, key, max_points, timeout, metadata))

    async def _history_chunks(
        self,
        run_id: str,
        key: str,
        max_points: int | None,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> AsyncIterator[list[Metric]]:
        async for chunk in self._transport.server_stream(
            self._stub.GetMetricHistory,
            self._history_request(run_id, key, max_points),
            timeout=timeout,
            metadata=metadata,
        ):
            yield types.metrics_from_columns(chunk.points)

    def _history_request(
        self, run_id: str, key: str, max_points: int | None
    ) -> api.GetMetricHistoryRequest:
        return proto(
            api.GetMetricHistoryRequest,
            project=self.project,
            run_id=run_id,
            metric_key=key,
            max_points=whole_or_zero(max_points, "max_points", 32),
        )

    async def get_metric_history_bulk(
        self,
        run_ids: Iterable[str],
        key: str,
        *,
        max_points: int | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> dict[str, list[Metric]]:
        """The history of one metric for several runs (at most 100), by run id as given;
        read again from its start when its stream is cut midway, as get_metric_history."""
        run_ids = list(run_ids)  # read once: a generator would be used up
        request = proto(
            api.GetMetricHistoryBulkRequest,
            project=self.project,
            run_ids=run_ids,
            metric_key=key,
            max_points=whole_or_zero(max_points, "max_points", 32),
        )
        found: dict[str, list[Metric]] = {run_id: [] for run_id in run_ids}
        # The server takes a run id in either case and answers in lower case.
        given: dict[str, list[str]] = {}
        for run_id in found:
            given.setdefault(run_id.lower(), []).append(run_id)
        chunks = await self._transport.every_response(
            self._stub.GetMetricHistoryBulk,
            request,
            lambda chunk: (chunk.run_id, types.metrics_from_columns(chunk.points)),
            timeout=timeout,
            metadata=metadata,
        )
        for answered, metrics in chunks:
            for run_id in given[answered]:
                found[run_id].extend(metrics)
        return found


def _tags(tags: dict[str, Any] | None) -> list[pb.Tag]:
    return [proto(pb.Tag, key=k, value=str(v)) for k, v in (tags or {}).items()]


def _apply_options(
    options: ListOptions, fields: dict[OrderByField, str]
) -> tuple[int | None, str | None, str | None]:
    """A search's page size, token and order from options: the field options order by,
    in their direction; None (no field) keeps the call's own order, its order_by or its
    default, MLflow's newest first (a direction alone, as Kubeflow's lists take it,
    would turn that default round)."""
    field = order_field(options.order_by)
    if field is None:
        return options.limit, options.next_page_token, None
    if field not in fields:
        raise invalid_argument("order_by", f"cannot order by {field.name} here")
    order = f"{fields[field]} {'ASC' if options.is_asc else 'DESC'}"
    return options.limit, options.next_page_token, order


async def _searched(
    page: Callable[[int, str], Awaitable[tuple[list[T], str]]],
    options: ListOptions | None,
    max_results: int | None,
    page_token: str | None,
) -> PagedList[T]:
    """A search's answer: with options (a Pager's), one page of their limit; else up to
    max_results (MLflow's default 1,000, its most 50,000), gathered from pages until
    one is cut short to fit its message."""
    if options is None:
        wanted = SEARCH_MAX_RESULTS_DEFAULT if max_results is None else max_results
        return await gathered(
            page, wanted, page_token or "", SEARCH_MAX_RESULTS_THRESHOLD, short_page_ends=True
        )
    items, token = await page(whole_or_zero(max_results, "max_results", 32), page_token or "")
    options.next_page_token = token
    return PagedList(items, token)


def _columns(metrics: Sequence[Metric]) -> pb.MetricColumns:
    _refuse_mapping(metrics, "metrics", "Metric")
    try:
        return types.metrics_to_columns(list(metrics))
    # A step past 64 bits, a value of no number or none a float can hold (10**400), an
    # item that is no Metric.
    except (TypeError, ValueError, OverflowError, AttributeError) as error:
        raise invalid_argument("metrics", str(error)) from None


def _pairs(items: Sequence[Param] | Sequence[RunTag], kind: type[M], argument: str) -> list[M]:
    """log_batch's params or tags as messages: each item has a key and a value, as a
    Param and a RunTag (or MLflow's own) have; anything else is an InvalidArgumentError
    naming the argument, not an AttributeError of a str."""
    name = kind.DESCRIPTOR.name
    _refuse_mapping(items, argument, name)
    pairs = []
    for item in items:
        if not (hasattr(item, "key") and hasattr(item, "value")):
            raise invalid_argument(argument, f"{item!r} is no {name} (a key and a value)")
        pairs.append(proto(kind, key=item.key, value=str(item.value)))
    return pairs


def _used_inputs(used_artifacts: Iterable[Any]) -> list[RunInput]:
    """start_run's used_artifacts as inputs, each checked before the run is made: one
    refused once the run exists would end it FAILED."""
    _refuse_mapping(used_artifacts, "used_artifacts", "RunInput")
    inputs = []
    for i, item in enumerate(used_artifacts or ()):
        if isinstance(item, RunInput):
            inputs.append(item)
        elif callable(getattr(item, "as_input", None)):
            inputs.append(item.as_input())
        else:
            raise invalid_argument(
                f"used_artifacts[{i}]",
                f"{item!r:.200} is no RunInput or artifact version (with as_input)",
            )
    return inputs


def _refuse_mapping(items: object, argument: str, name: str) -> None:
    # A dict of keys and values is MLflow's log_params(params), a common slip here.
    if isinstance(items, Mapping | str):
        raise invalid_argument(argument, f"{items!r} is no list of {name}")


def _request_id_of(metadata: Metadata | None) -> str | None:
    """The request id a caller gave in a call's metadata, if any."""
    return next((value for key, value in metadata or () if key == REQUEST_ID_HEADER), None)
