"""Long-running operations: garbage collection, followed until it is done."""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass, field


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
