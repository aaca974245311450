"""Operations as the server answers them, read into cairn.types' Operation. Apart from
the types, which exceptions.py names: reading a state may raise one of its errors."""

from __future__ import annotations

from ..operations.v1 import operations_pb2 as pb
from ._answers import known
from ._operations import Operation, OperationKind, OperationState

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
