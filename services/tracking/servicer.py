"""gRPC servicer of the tracking service: validates, converts, calls the stores."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import TypeAlias, TypeVar

import grpc

from cairn.tracking.v1 import tracking_service_pb2 as api
from cairn.tracking.v1 import tracking_service_pb2_grpc

from ..common import answers, idempotency, paging
from ..common import validation as common
from ..common.errors import InvalidArgument, NotFound, invalid_field
from ..common.service import Resources
from . import convert, fields, validation
from .fitting import fitting_experiments, fitting_runs
from .model import (
    RUN_NAME_TAG,
    USER_TAG,
    Batch,
    Experiment,
    LifecycleStage,
    MetricPoint,
    RunStatus,
)
from .store import sizes
from .store.experiments import ExperimentStore
from .store.history import MetricHistory
from .store.runs import RunStore
from .store.search import MAX_ORDER_TERMS, RunQuery, search_page
from .store.writes import RunWriter

Context: TypeAlias = grpc.aio.ServicerContext
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_BULK_RUNS = 100
# Far more experiments than anyone searches at once; each is parsed and planned for.
MAX_SEARCH_EXPERIMENTS = 1000
# Writes answering an object whose tags their request does not bound (a create's, only
# by the largest message): how their repeat reads it again when their answer is too
# large for a request id to keep (common/idempotency.py). UpdateRun answers a RunInfo,
# whose fields validation bounds to a few KB.
_EXPERIMENT_READ = idempotency.Reread(
    "GetExperiment", ("experiment.project", "experiment.experiment_id")
)
REREADS = {
    "CreateExperiment": _EXPERIMENT_READ,
    "RenameExperiment": _EXPERIMENT_READ,
    "CreateRun": idempotency.Reread("GetRun", ("run.info.project", "run.info.run_id")),
}


class TrackingServicer(tracking_service_pb2_grpc.TrackingServiceServicer):
    def __init__(self, resources: Resources) -> None:
        pool, config = resources.pool, resources.config
        self._pool = pool
        self._experiments = ExperimentStore(pool)
        run_bound = sizes.bound_for(config.max_message_bytes)
        self._runs = RunStore(pool, run_bound)
        self._writer = RunWriter(pool, run_bound, resources.write_slots)
        self._long_reads = resources.read_slots
        self._history = MetricHistory(
            pool, config.stream_stall_seconds, self._long_reads, config.db_statement_timeout_seconds
        )
        budget = config.max_message_bytes - paging.RESPONSE_RESERVE
        self._fitting = functools.partial(fitting_runs, budget=budget)
        self._fitting_experiments = functools.partial(fitting_experiments, budget=budget)

    # Experiments

    async def CreateExperiment(
        self, request: api.CreateExperimentRequest, context: Context
    ) -> api.CreateExperimentResponse:
        project = common.project(request.project)
        tags = fields.tags(request.tags, "tags")
        validation.experiment_tag_bytes(validation.tag_bytes(tags), "tags")
        record = await self._experiments.create(
            project,
            validation.experiment_name(request.name),
            validation.artifact_location(request.artifact_location, project),
            tags,
        )
        return await _experiment_answer(record, api.CreateExperimentResponse)

    async def GetExperiment(
        self, request: api.GetExperimentRequest, context: Context
    ) -> api.GetExperimentResponse:
        record = await self._experiments.get(
            common.project(request.project), validation.experiment_id(request.experiment_id)
        )
        return await _experiment_answer(record, api.GetExperimentResponse)

    async def GetExperimentByName(
        self, request: api.GetExperimentByNameRequest, context: Context
    ) -> api.GetExperimentByNameResponse:
        project = common.project(request.project)
        try:
            name = validation.experiment_name(request.name)
        except InvalidArgument as refused:  # no experiment can have it: absent, as in MLflow
            raise NotFound(
                "EXPERIMENT_NOT_FOUND",
                f"no experiment is named so in project {project!r}: {refused.message}",
                metadata={"name": request.name[: validation.MAX_NAME_LENGTH]},
            ) from None
        record = await self._experiments.get_by_name(project, name)
        return await _experiment_answer(record, api.GetExperimentByNameResponse)

    async def SearchExperiments(
        self, request: api.SearchExperimentsRequest, context: Context
    ) -> api.SearchExperimentsResponse:
        page = await self._experiments.search(
            common.project(request.project),
            request.filter,
            request.order_by,
            fields.view_type(request.view_type),
            paging.page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
            request.page_token,
            self._fitting_experiments,
        )

        def answer() -> api.SearchExperimentsResponse:
            return api.SearchExperimentsResponse(
                experiments=[convert.experiment(e) for e in page.items],
                next_page_token=page.next_page_token,
            )

        return await answers.built(sum(len(e.tags) for e in page.items), answer)

    async def RenameExperiment(
        self, request: api.RenameExperimentRequest, context: Context
    ) -> api.RenameExperimentResponse:
        record = await self._experiments.rename(
            common.project(request.project),
            validation.experiment_id(request.experiment_id),
            validation.experiment_name(request.new_name, "new_name"),
        )
        return await _experiment_answer(record, api.RenameExperimentResponse)

    async def DeleteExperiment(
        self, request: api.DeleteExperimentRequest, context: Context
    ) -> api.DeleteExperimentResponse:
        await self._experiments.set_lifecycle(
            common.project(request.project),
            validation.experiment_id(request.experiment_id),
            LifecycleStage.DELETED,
        )
        return api.DeleteExperimentResponse()

    async def RestoreExperiment(
        self, request: api.RestoreExperimentRequest, context: Context
    ) -> api.RestoreExperimentResponse:
        await self._experiments.set_lifecycle(
            common.project(request.project),
            validation.experiment_id(request.experiment_id),
            LifecycleStage.ACTIVE,
        )
        return api.RestoreExperimentResponse()

    async def SetExperimentTag(
        self, request: api.SetExperimentTagRequest, context: Context
    ) -> api.SetExperimentTagResponse:
        await self._experiments.set_tag(
            common.project(request.project),
            validation.experiment_id(request.experiment_id),
            validation.key(request.key, "key"),
            validation.tag_value(request.value, "value"),
        )
        return api.SetExperimentTagResponse()

    async def DeleteExperimentTag(
        self, request: api.DeleteExperimentTagRequest, context: Context
    ) -> api.DeleteExperimentTagResponse:
        await self._experiments.delete_tag(
            common.project(request.project),
            validation.experiment_id(request.experiment_id),
            validation.key(request.key, "key"),
        )
        return api.DeleteExperimentTagResponse()

    # Runs

    async def CreateRun(
        self, request: api.CreateRunRequest, context: Context
    ) -> api.CreateRunResponse:
        parent = request.parent_run_id and validation.run_id(request.parent_run_id, "parent_run_id")
        tags = fields.tags(request.tags, "tags")
        if parent:
            tags = fields.with_parent(tags, parent)
        tagged = fields.tagged_name(tags, fields.value_of(request.tags, "tags", RUN_NAME_TAG))
        given = validation.run_name(request.run_name)
        if given and tagged and given != tagged:
            raise invalid_field(
                "run_name", f"is not the tag {RUN_NAME_TAG} ({tagged!r}): give one, or both alike"
            )
        record = await self._runs.create(
            common.project(request.project),
            validation.experiment_id(request.experiment_id),
            run_name=given or tagged,
            user_id=common.text(request.user_id, "user_id", 256)
            or fields.tagged_user(tags, fields.value_of(request.tags, "tags", USER_TAG)),
            start_time_ms=validation.run_time(request.start_time_ms, "start_time_ms"),
            tags=tags,
            parent_run_id=parent,
            status=fields.status(request.status) or RunStatus.RUNNING,
        )
        return api.CreateRunResponse(run=convert.run(record))

    async def GetRun(self, request: api.GetRunRequest, context: Context) -> api.GetRunResponse:
        record = await self._runs.get(
            common.project(request.project), validation.run_id(request.run_id)
        )
        return await answers.built(
            convert.run_entries(record), lambda: api.GetRunResponse(run=convert.run(record))
        )

    async def UpdateRun(
        self, request: api.UpdateRunRequest, context: Context
    ) -> api.UpdateRunResponse:
        info = await self._runs.update(
            common.project(request.project),
            validation.run_id(request.run_id),
            fields.status(request.status),
            fields.end_time_ms(request),
            validation.run_name(request.run_name),
        )
        return api.UpdateRunResponse(run_info=convert.run_info(info))

    async def DeleteRun(
        self, request: api.DeleteRunRequest, context: Context
    ) -> api.DeleteRunResponse:
        await self._runs.set_lifecycle(
            common.project(request.project),
            validation.run_id(request.run_id),
            LifecycleStage.DELETED,
        )
        return api.DeleteRunResponse()

    async def RestoreRun(
        self, request: api.RestoreRunRequest, context: Context
    ) -> api.RestoreRunResponse:
        await self._runs.set_lifecycle(
            common.project(request.project),
            validation.run_id(request.run_id),
            LifecycleStage.ACTIVE,
        )
        return api.RestoreRunResponse()

    async def SearchRuns(
        self, request: api.SearchRunsRequest, context: Context
    ) -> api.SearchRunsResponse:
        if not request.experiment_ids:
            raise invalid_field("experiment_ids", "name at least one experiment")
        validation.count(len(request.experiment_ids), MAX_SEARCH_EXPERIMENTS, "experiment_ids")
        if len(request.order_by) > MAX_ORDER_TERMS:
            raise invalid_field("order_by", f"at most {MAX_ORDER_TERMS} terms")
        query = RunQuery(
            project=common.project(request.project),
            experiment_ids=fields.searched_experiments(request.experiment_ids),
            filter=request.filter,
            order_by=list(request.order_by),
            view_type=fields.view_type(request.view_type),
            page_size=paging.page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
            page_token=request.page_token,
        )
        page, next_page_token = await search_page(
            self._pool, query, self._fitting, self._long_reads
        )

        def columns() -> api.SearchRunsResponse:
            return api.SearchRunsResponse(
                columns=convert.run_columns(page, query.project), next_page_token=next_page_token
            )

        def runs() -> api.SearchRunsResponse:
            return api.SearchRunsResponse(
                runs=[convert.run(r) for r in page.runs()], next_page_token=next_page_token
            )

        return await answers.built(page.entries(), columns if request.columnar else runs)

    # Logging

    async def LogMetric(
        self, request: api.LogMetricRequest, context: Context
    ) -> api.LogMetricResponse:
        metric = request.metric
        key = validation.key(metric.key, "metric.key")
        await self._writer.log_metric(
            common.project(request.project),
            validation.run_id(request.run_id),
            MetricPoint(key, metric.value, fields.timestamp_ms(metric), metric.step),
            request_id=idempotency.request_id_of(context),
            fingerprint=idempotency.fingerprint_of(request),
        )
        return api.LogMetricResponse()

    async def LogParam(
        self, request: api.LogParamRequest, context: Context
    ) -> api.LogParamResponse:
        batch = Batch(params=dict([fields.param(request.param, "param")]))
        await self._log(request.project, request.run_id, batch)
        return api.LogParamResponse()

    async def SetTag(self, request: api.SetTagRequest, context: Context) -> api.SetTagResponse:
        tags = dict([fields.tag(request.tag, "tag")])
        name = fields.tagged_name(tags, "tag.value")
        batch = Batch(tags=tags, run_name=name)
        await self._log(request.project, request.run_id, batch)
        return api.SetTagResponse()

    async def DeleteTag(
        self, request: api.DeleteTagRequest, context: Context
    ) -> api.DeleteTagResponse:
        try:
            await self._writer.delete_tag(
                common.project(request.project),
                validation.run_id(request.run_id),
                validation.key(request.key, "key"),
            )
        except NotFound as missing:
            # Only a tag kept from before the name was the tag (migration 0012) is one.
            if request.key == RUN_NAME_TAG and missing.reason == "TAG_NOT_FOUND":
                raise invalid_field(
                    "key", f"{RUN_NAME_TAG} is the run's name, which a run keeps: rename the run"
                ) from None
            raise
        return api.DeleteTagResponse()

    async def LogBatch(
        self, request: api.LogBatchRequest, context: Context
    ) -> api.LogBatchResponse:
        validation.count(len(request.metrics.values), validation.MAX_METRICS_PER_BATCH, "metrics")
        validation.count(len(request.params), validation.MAX_PARAMS_PER_BATCH, "params")
        validation.count(len(request.tags), validation.MAX_TAGS_PER_BATCH, "tags")
        request_id = fields.batch_id(request, context)

        def read() -> Batch:
            tags = fields.tags(request.tags, "tags")
            name = fields.tagged_name(tags, fields.value_of(request.tags, "tags", RUN_NAME_TAG))
            return Batch(
                metrics=convert.metric_columns(request.metrics, "metrics"),
                params=fields.params(request.params, "params"),
                tags=tags,
                run_name=name,
                request_id=request_id,
            )

        entries = len(request.metrics.keys) + len(request.params) + len(request.tags)
        await self._log(request.project, request.run_id, await answers.built(entries, read))
        return api.LogBatchResponse()

    async def LogInputs(
        self, request: api.LogInputsRequest, context: Context
    ) -> api.LogInputsResponse:
        validation.count(len(request.inputs), validation.MAX_INPUTS_PER_CALL, "inputs")
        inputs = [fields.run_input(item, f"inputs[{i}]") for i, item in enumerate(request.inputs)]
        await self._writer.log_inputs(
            common.project(request.project), validation.run_id(request.run_id), inputs
        )
        return api.LogInputsResponse()

    async def _log(self, project: str, run_id: str, batch: Batch) -> None:
        await self._writer.log_batch(common.project(project), validation.run_id(run_id), batch)

    # Metric history

    async def GetMetricHistory(
        self, request: api.GetMetricHistoryRequest, context: Context
    ) -> None:
        # Written, not yielded: each write is bounded (the read holds a connection while
        # it waits), and the read is closed at once when the stream ends early.
        chunks = self._history.read(
            common.project(request.project),
            [validation.run_id(request.run_id)],
            validation.key(request.metric_key, "metric_key"),
            fields.max_points(request.max_points),
        )
        async with contextlib.aclosing(chunks):
            async for _, chunk in chunks:
                message = api.GetMetricHistoryResponse(points=convert.series(chunk))
                await self._history.taken(context.write(message))

    async def GetMetricHistoryBulk(
        self, request: api.GetMetricHistoryBulkRequest, context: Context
    ) -> None:
        validation.count(len(request.run_ids), MAX_BULK_RUNS, "run_ids")
        project = common.project(request.project)
        key = validation.key(request.metric_key, "metric_key")
        max_points = fields.max_points(request.max_points)
        run_ids = [validation.run_id(r, f"run_ids[{i}]") for i, r in enumerate(request.run_ids)]
        chunks = self._history.read(project, list(dict.fromkeys(run_ids)), key, max_points)
        async with contextlib.aclosing(chunks):
            async for run_id, chunk in chunks:
                message = api.GetMetricHistoryBulkResponse(
                    run_id=run_id, points=convert.series(chunk)
                )
                await self._history.taken(context.write(message))


Answer = TypeVar("Answer")


async def _experiment_answer(record: Experiment, answer: Callable[..., Answer]) -> Answer:
    """answer(experiment=...) of the record, built off the event loop when it holds many
    tags (an experiment may hold over 100,000 short ones)."""
    return await answers.built(
        len(record.tags), lambda: answer(experiment=convert.experiment(record))
    )
