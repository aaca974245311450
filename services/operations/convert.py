"""Operation records to cairn.operations.v1 messages."""

from __future__ import annotations

from datetime import timedelta

from cairn.operations.v1 import operations_pb2 as pb

from ..common.timestamps import to_proto
from .model import Operation


def operation(record: Operation) -> pb.Operation:
    message = pb.Operation(
        name=record.name,
        kind=int(record.kind),  # type: ignore[arg-type]
        state=int(record.state),  # type: ignore[arg-type]
        progress=pb.Progress(done=record.progress_done, total=record.progress_total),
        counts=[pb.PurgeCount(kind=k, count=v) for k, v in sorted(record.counts.items())],
        errors=record.errors,
        create_time=to_proto(record.create_time),
        update_time=to_proto(record.update_time),
    )
    if record.end_time is not None:
        message.end_time.CopyFrom(to_proto(record.end_time))
    if "older_than_seconds" in record.spec:
        older_than = timedelta(seconds=record.spec["older_than_seconds"])
        message.garbage_collection.older_than.FromTimedelta(older_than)
        message.garbage_collection.cutoff_time.CopyFrom(to_proto(record.create_time - older_than))
    return message
