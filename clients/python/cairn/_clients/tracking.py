"""`TrackingClient`: experiment tracking with MLflow's method names and arguments."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .. import _names as names
from .._argument_error import invalid_argument
from .._base import BaseClient
from .._headers import Metadata
from .._numbers import whole_or_zero
from ..exceptions import NotFoundError
from ..tracking.v1 import tracking_service_pb2 as api
from ..tracking.v1 import tracking_service_pb2_grpc
from ..types import _tracking as types
from ..types._arguments import proto
from ..types._paging import ListOptions, OrderByField, PagedList, order_keys
from ..types._tracking import Run, RunInput, RunStatus, ViewType
from . import journal
from ._experiment_ids import experiment_ids_of
from .active_run import ActiveRun
from .experiments import Experiments
from .lineage import RunLineage
from .metric_histories import MetricHistories
from .run_artifacts import RunArtifacts
from .run_logging import RunLogging, refuse_mapping
from .run_media import RunMedia
from .run_models import RunModels
from .run_operations import BackgroundWrites
from .run_tables import RunTables
from .tracking_calls import SEARCH_MAX_RESULTS_DEFAULT, apply_options, searched, tag_messages

MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"
_RUN_ORDER = {
    OrderByField.CREATE_TIME: "attributes.start_time",
    OrderByField.ID: "attributes.run_id",
}


class TrackingClient(
    BaseClient,
    Experiments,
    RunLogging,
    MetricHistories,
    RunArtifacts,
    RunMedia,
    RunModels,
    RunLineage,
    RunTables,
    BackgroundWrites,
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
            tags=tag_messages(tags),
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
            max_results, page_token, chosen = apply_options(options, _RUN_ORDER)
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

        return await searched(page, options, max_results, page_token)

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


def _used_inputs(used_artifacts: Iterable[Any]) -> list[RunInput]:
    """start_run's used_artifacts as inputs, each checked before the run is made: one
    refused once the run exists would end it FAILED."""
    refuse_mapping(used_artifacts, "used_artifacts", "RunInput")
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
