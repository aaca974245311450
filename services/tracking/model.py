"""Plain records the tracking store reads and writes; no protobuf, no SQL.

Enum numbers equal those of the cairn.tracking.v1 enums, so the servicer converts
them by value (a unit test holds the two in step).
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

import numpy as np

# Where runs keep their artifacts: "cairn-artifacts://<project>/<path>" names a path in
# the artifact service, always in the experiment's own project.
ARTIFACT_SCHEME = "cairn-artifacts"
# The tag MLflow keeps a run's name as: it names a run at creation, renames it when set,
# and filters and orders compare the name (docs/tracking.md, "Runs").
RUN_NAME_TAG = "mlflow.runName"
# The tag MLflow keeps a run's parent as: a run made with a parent carries it, so that
# MLflow's search for a run's children (tags.mlflow.parentRunId = '<id>') finds them.
PARENT_RUN_TAG = "mlflow.parentRunId"
# The tag MLflow's client reads a new run's user from, when no user is given.
USER_TAG = "mlflow.user"


class LifecycleStage(enum.IntEnum):
    ACTIVE = 1
    DELETED = 2


class ViewType(enum.IntEnum):
    ACTIVE_ONLY = 1
    DELETED_ONLY = 2
    ALL = 3


class RunStatus(enum.IntEnum):
    RUNNING = 1
    SCHEDULED = 2
    FINISHED = 3
    FAILED = 4
    KILLED = 5


@dataclass
class Experiment:
    project: str
    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: LifecycleStage
    creation_time: datetime
    last_update_time: datetime
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class RunInfo:
    project: str
    run_id: str  # 32 lowercase hex characters
    experiment_id: str
    run_name: str
    user_id: str
    status: RunStatus
    start_time_ms: int
    end_time_ms: int | None
    artifact_uri: str
    lifecycle_stage: LifecycleStage  # DELETED when the run or its experiment is
    parent_run_id: str | None


class MetricPoint(NamedTuple):
    """The latest value of a metric. A tuple: a page of runs holds thousands, and a
    frozen dataclass costs several times as much to make."""

    key: str
    value: float
    timestamp_ms: int
    step: int


@dataclass(frozen=True)
class RunInput:
    kind: str
    name: str
    uri: str
    digest: str = ""
    context: str = ""


@dataclass
class Run:
    info: RunInfo
    metrics: list[MetricPoint] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    inputs: list[RunInput] = field(default_factory=list)


@dataclass
class MetricColumns:
    """Metric points as numpy columns: point i is
    (keys[key_indexes[i]], values[i], steps[i], timestamps_ms[i]); keys are distinct."""

    keys: list[str] = field(default_factory=list)
    key_indexes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    values: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    timestamps_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class MetricSeries:
    """Consecutive points of one metric of one run, in step order, as columns."""

    key: str
    values: list[float]
    steps: list[int]
    timestamps_ms: list[int]


@dataclass
class Batch:
    """What one LogBatch writes, validated; applied whole or not at all."""

    metrics: MetricColumns = field(default_factory=MetricColumns)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    request_id: str = ""
    run_name: str = ""  # renames the run: given as the tag RUN_NAME_TAG

    def fingerprint(self) -> bytes:
        """The sha256 of what the batch writes, which tells a repeat of it from another
        batch under its request id."""
        # The tags as the request sent them, the name's tag among them: a batch applied
        # by a server that kept the tag has the same fingerprint.
        tags = {**self.tags, RUN_NAME_TAG: self.run_name} if self.run_name else self.tags
        written = [self.metrics.keys, self.params, tags]
        digest = hashlib.sha256(json.dumps(written, sort_keys=True).encode())
        metrics = self.metrics  # columns of fixed types, one length: their bytes are enough
        # Every NaN as one: a journal's JSON keeps no NaN's sign or payload (x86 sets the
        # sign of 0 * inf), so its replay of a stored batch would be another batch.
        values = metrics.values
        if np.isnan(values).any():
            values = np.where(np.isnan(values), np.nan, values)
        for column in (metrics.key_indexes, values, metrics.steps, metrics.timestamps_ms):
            digest.update(np.ascontiguousarray(column).data)
        return digest.digest()
