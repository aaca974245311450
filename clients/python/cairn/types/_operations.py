"""Long-running operations: garbage collection, followed until it is done."""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass, field

from ..operations.v1 import operations_pb2 as pb
from ._answers import known


class OperationState(enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class OperationKind(enum.Enum):
    GARBAGE_COLLECTION = "GARBAGE_COLLECTION"


@dataclass(frozen=True)
class Operation:
    """A long-running operation as the server last reported it.

    Times are milliseconds since the epoch. `progress_done` out of `progress_total`
    items (the total grows while steps find more work); `counts` says what was removed,
    e.g. {"runs": 12, "experiments": 1, "artifact_objects": 40, "artifact_bytes": 5242880,
    "request_ids": 300}.
    """

    name: str
    kind: OperationKind | None
    state: OperationState
    progress_done: int = 0
    progress_total: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    create_time: int | None = None
    update_time: int | None = None
    end_time: int | None = None
    older_than: datetime.timedelta | None = None
    cutoff_time: int | None = None

    @property
    def done(self) -> bool:
        return self.state in (OperationState.SUCCEEDED, OperationState.FAILED)

    @property
    def job_id(self) -> str:
        """ML cube's name for the operation's name."""
        return self.name


_STATES = {
    pb.OPERATION_STATE_UNSPECIFIED: OperationState.PENDING,
    pb.OPERATION_STATE_PENDING: OperationState.PENDING,
    pb.OPERATION_STATE_RUNNING: OperationState.RUNNING,
    pb.OPERATION_STATE_SUCCEEDED: OperationState.SUCCEEDED,
    pb.OPERATION_STATE_FAILED: OperationState.FAILED,
}
_KINDS = {pb.OPERATION_KIND_GARBAGE_COLLECTION: OperationKind.GARBAGE_COLLECTION}


def _millis(message: pb.Operation, name: str) -> int | None:
    return getattr(message, name).ToMilliseconds() if message.HasField(name) else None


def operation_from_proto(message: pb.Operation) -> Operation:
    gc = message.garbage_collection if message.HasField("garbage_collection") else None
    return Operation(
        name=message.name,
        kind=_KINDS.get(message.kind),
        # Not read as PENDING: a newer server's end state waited for would never end.
        state=known(_STATES, message.state, "operation state"),
        progress_done=message.progress.done,
        progress_total=message.progress.total,
        counts={c.kind: c.count for c in message.counts},
        errors=list(message.errors),
        create_time=_millis(message, "create_time"),
        update_time=_millis(message, "update_time"),
        end_time=_millis(message, "end_time"),
        older_than=gc.older_than.ToTimedelta() if gc is not None else None,
        cutoff_time=gc.cutoff_time.ToMilliseconds() if gc is not None else None,
    )
