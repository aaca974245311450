"""Tracking types, named and shaped as in MLflow: times are milliseconds since the epoch,
statuses and lifecycle stages are strings."""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import accumulate, pairwise, repeat
from typing import Any, TypeVar

from ..tracking.v1 import tracking_pb2 as pb
from ..tracking.v1 import tracking_service_pb2 as api
from ._answers import known
from ._arguments import member, named

T = TypeVar("T")


class RunStatus(enum.StrEnum):
    """Status of a run; compares equal to its name ("RUNNING", "FINISHED", ...)."""

    RUNNING = "RUNNING"
    SCHEDULED = "SCHEDULED"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"

    @classmethod
    def _missing_(cls, value: object) -> RunStatus | None:
        # As MLflow's RunStatus.from_string, in any case: "finished".
        return cls._value2member_map_.get(value.upper()) if isinstance(value, str) else None  # type: ignore[return-value]


class ViewType(enum.IntEnum):
    """Which lifecycle stages a search returns (MLflow's numbers)."""

    ACTIVE_ONLY = 1
    DELETED_ONLY = 2
    ALL = 3

    @classmethod
    def _missing_(cls, value: object) -> ViewType | None:
        # By name too, in any case, as MLflow's ViewType.from_string: "ALL", "active_only".
        return named(cls, value)


class LifecycleStage:
    ACTIVE = "active"
    DELETED = "deleted"


# A run table's attribute columns, first and in this order, as MLflow's search_runs
# DataFrame has them (with the run's name, which MLflow keeps as the tag mlflow.runName).
ATTRIBUTES = (
    "run_id",
    "run_name",
    "experiment_id",
    "status",
    "artifact_uri",
    "start_time",
    "end_time",
)


def now_ms() -> int:
    """This moment, in milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Metric:
    """One metric point; timestamp in milliseconds since the epoch, by default when the
    point was made (log_batch sends it as it is, so that a retry is the same request)."""

    key: str
    value: float
    timestamp: int = field(default_factory=now_ms)
    step: int = 0


@dataclass(frozen=True)
class Param:
    key: str
    value: str


@dataclass(frozen=True)
class RunTag:
    key: str
    value: str


@dataclass(frozen=True)
class RunInput:
    """Something a run used: an artifact stored by Cairn, a dataset or a model.

    Attributes:
        uri: where it lives, e.g. "cairn-artifacts://default/data/train.csv".
        kind: "artifact", "dataset", "model", ...
        name: a readable name.
        digest: a content digest when known, e.g. "sha256:...".
        context: how it was used, e.g. "training".
    """

    uri: str
    kind: str = "artifact"
    name: str = ""
    digest: str = ""
    context: str = ""


@dataclass
class Experiment:
    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: str
    tags: dict[str, str] = field(default_factory=dict)
    creation_time: int = 0
    last_update_time: int = 0
    project: str = "default"


@dataclass
class RunInfo:
    run_id: str
    experiment_id: str
    run_name: str
    user_id: str
    status: RunStatus
    start_time: int
    end_time: int | None
    artifact_uri: str
    lifecycle_stage: str
    parent_run_id: str | None = None
    project: str = "default"

    @property
    def run_uuid(self) -> str:
        """MLflow's older name for run_id."""
        return self.run_id


@dataclass
class RunData:
    """What was logged: the latest value of each metric, params and tags, by key."""

    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    latest_metrics: dict[str, Metric] = field(default_factory=dict)


@dataclass
class Run:
    info: RunInfo
    data: RunData = field(default_factory=RunData)
    inputs: list[RunInput] = field(default_factory=list)


_STAGES = {
    pb.LIFECYCLE_STAGE_UNSPECIFIED: LifecycleStage.ACTIVE,
    pb.LIFECYCLE_STAGE_ACTIVE: LifecycleStage.ACTIVE,
    pb.LIFECYCLE_STAGE_DELETED: LifecycleStage.DELETED,
}


def status_to_proto(status: RunStatus | str, argument: str = "status") -> str:
    """The wire name of a status, e.g. "RUN_STATUS_FINISHED"."""
    return "RUN_STATUS_" + member(RunStatus, status, argument).value


def view_type_to_proto(view_type: int | str, argument: str = "view_type") -> str:
    """The wire name of a view type, e.g. "VIEW_TYPE_ACTIVE_ONLY"."""
    return "VIEW_TYPE_" + member(ViewType, view_type, argument).name


def experiment_from_proto(message: pb.Experiment) -> Experiment:
    return Experiment(
        experiment_id=message.experiment_id,
        name=message.name,
        artifact_location=message.artifact_location,
        lifecycle_stage=known(_STAGES, message.lifecycle_stage, "lifecycle stage"),
        tags={t.key: t.value for t in message.tags},
        creation_time=message.creation_time.ToMilliseconds(),
        last_update_time=message.last_update_time.ToMilliseconds(),
        project=message.project,
    )


def run_info_from_proto(message: pb.RunInfo) -> RunInfo:
    return RunInfo(
        run_id=message.run_id,
        experiment_id=message.experiment_id,
        run_name=message.run_name,
        user_id=message.user_id,
        status=known(_STATUSES, message.status, "run status"),
        start_time=message.start_time_ms,
        end_time=message.end_time_ms or None,
        artifact_uri=message.artifact_uri,
        lifecycle_stage=known(_STAGES, message.lifecycle_stage, "lifecycle stage"),
        parent_run_id=message.parent_run_id or None,
        project=message.project,
    )


# By wire number, looked up once per run rather than named and parsed: a page holds
# a thousand runs.
_STATUSES = {pb.RunStatus.Value("RUN_STATUS_" + status): status for status in RunStatus}


def run_from_proto(message: pb.Run) -> Run:
    data = message.data
    latest = {m.key: Metric(m.key, m.value, m.timestamp_ms, m.step) for m in data.metrics}
    return Run(
        info=run_info_from_proto(message.info),
        data=RunData(
            metrics={k: m.value for k, m in latest.items()},
            params={p.key: p.value for p in data.params},
            tags={t.key: t.value for t in data.tags},
            latest_metrics=latest,
        ),
        inputs=[
            RunInput(uri=i.uri, kind=i.kind, name=i.name, digest=i.digest, context=i.context)
            for i in message.inputs
        ],
    )


def runs_from_search(reply: api.SearchRunsResponse) -> list[Run]:
    """The runs of a SearchRuns page, whichever layout the server answered in."""
    if reply.HasField("columns"):
        return runs_from_columns(reply.columns)
    return [run_from_proto(r) for r in reply.runs]


def runs_from_columns(columns: pb.RunColumns) -> list[Run]:
    """The runs of a columnar page (pb.RunColumns), each as run_from_proto makes it.

    Each repeated field is copied into a list first: a list is read several times
    faster than the message's own container, element by element.

    Raises:
        ValueError: the page does not add up (check_columns).
    """
    check_columns(columns)
    infos = map(
        RunInfo,
        list(columns.run_ids),
        list(columns.experiment_ids),
        list(columns.run_names),
        list(columns.user_ids),
        list(map(_STATUSES.__getitem__, list(columns.statuses))),
        list(columns.start_times_ms),
        [t or None for t in list(columns.end_times_ms)],
        list(columns.artifact_uris),
        list(map(_STAGES.__getitem__, list(columns.lifecycle_stages))),
        [p or None for p in list(columns.parent_run_ids)],
        repeat(columns.project),
    )
    points = columns.metrics
    metrics = map(
        Metric,
        _keys(points.keys, points.key_indexes),
        list(points.values),
        list(points.timestamps_ms),
        list(points.steps),
    )
    inputs = [RunInput(i.uri, i.kind, i.name, i.digest, i.context) for i in columns.inputs]
    logged = zip(
        _per_run(columns.metric_counts, list(metrics)),
        _per_run(columns.param_counts, _pairs(columns.params)),
        _per_run(columns.tag_counts, _pairs(columns.tags)),
        _per_run(columns.input_counts, inputs),
        strict=True,
    )
    return [
        Run(info, _run_data(latest, params, tags), run_inputs)
        for info, (latest, params, tags, run_inputs) in zip(infos, logged, strict=True)
    ]


def check_columns(columns: pb.RunColumns) -> None:
    """Raises ValueError, naming the field, unless a columnar page adds up: an entry per
    run in every list of the runs' attributes, a count per run in each table's counts,
    as many entries in each of the table's lists as its counts add up to, and key
    positions within its keys. A page that does not would pair values with the wrong
    runs. A status or stage this client does not know raises UnknownError
    (UNKNOWN_VALUE)."""
    runs = len(columns.run_ids)
    for name in _INFO_COLUMNS:
        if len(getattr(columns, name)) != runs:
            raise ValueError(f"a columnar page holds {runs} runs but its {name} does not")
    tables = (
        ("metric", columns.metrics, ("key_indexes", "values", "steps", "timestamps_ms")),
        ("param", columns.params, ("key_indexes", "values")),
        ("tag", columns.tags, ("key_indexes", "values")),
    )
    for kind, table, lists in tables:
        entries = _counted(columns, kind, runs)
        if any(len(getattr(table, name)) != entries for name in lists):
            raise ValueError(f"a columnar page counts {entries} {kind}s but its lists differ")
        if entries and max(table.key_indexes) >= len(table.keys):
            raise ValueError(f"a columnar page's {kind} key_indexes go past its keys")
    if _counted(columns, "input", runs) != len(columns.inputs):
        raise ValueError("a columnar page's input_counts do not add up to its inputs")
    for status in set(columns.statuses):  # a few distinct ones, whatever the runs
        known(_STATUSES, status, "run status")
    for stage in set(columns.lifecycle_stages):
        known(_STAGES, stage, "lifecycle stage")


def _counted(columns: pb.RunColumns, kind: str, runs: int) -> int:
    """The entries a table's counts add up to, once there is a count per run."""
    counts = getattr(columns, f"{kind}_counts")
    if len(counts) != runs:
        raise ValueError(f"a columnar page holds {runs} runs but its {kind}_counts does not")
    return sum(counts)


_INFO_COLUMNS = (
    "experiment_ids",
    "run_names",
    "user_ids",
    "statuses",
    "start_times_ms",
    "end_times_ms",
    "artifact_uris",
    "lifecycle_stages",
    "parent_run_ids",
)


def _run_data(latest: list[Metric], params: list[Any], tags: list[Any]) -> RunData:
    return RunData(
        metrics={m.key: m.value for m in latest},
        params=dict(params),
        tags=dict(tags),
        latest_metrics={m.key: m for m in latest},
    )


def _pairs(columns: pb.KeyValueColumns) -> list[tuple[str, str]]:
    return list(zip(_keys(columns.keys, columns.key_indexes), list(columns.values), strict=True))


def _keys(keys: Iterable[str], indexes: Iterable[int]) -> list[str]:
    """Dictionary-encoded keys decoded (each key one string, shared)."""
    return list(map(list(keys).__getitem__, list(indexes)))


def _per_run(counts: Iterable[int], items: list[T]) -> list[list[T]]:
    """items cut into consecutive runs of counts[i] each."""
    bounds = [0, *accumulate(list(counts))]
    return [items[start:end] for start, end in pairwise(bounds)]


def metrics_to_columns(metrics: list[Metric]) -> pb.MetricColumns:
    """Packs metrics into columns, each distinct key sent once."""
    index: dict[str, int] = {}
    key_indexes = [index.setdefault(m.key, len(index)) for m in metrics]
    return pb.MetricColumns(
        keys=list(index),
        key_indexes=key_indexes,
        values=[m.value for m in metrics],
        steps=[m.step for m in metrics],
        timestamps_ms=[m.timestamp for m in metrics],
    )


def metrics_from_columns(columns: pb.MetricColumns) -> list[Metric]:
    # Plain lists iterate much faster than protobuf's repeated fields; this runs per point.
    keys = list(columns.keys)
    values, steps, stamps = list(columns.values), list(columns.steps), list(columns.timestamps_ms)
    if len(keys) == 1:
        key = keys[0]
        return [Metric(key, v, t, s) for v, s, t in zip(values, steps, stamps, strict=True)]
    return [
        Metric(keys[k], v, t, s)
        for k, v, s, t in zip(list(columns.key_indexes), values, steps, stamps, strict=True)
    ]
