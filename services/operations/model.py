"""Plain records of operations; no protobuf, no SQL. Enum numbers equal those of the
cairn.operations.v1 enums."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class Kind(enum.IntEnum):
    GARBAGE_COLLECTION = 1


class State(enum.IntEnum):
    PENDING = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4


DONE = (State.SUCCEEDED, State.FAILED)
PREFIX = "operations/"


@dataclass
class Operation:
    operation_id: uuid.UUID
    kind: Kind
    state: State
    spec: dict[str, Any]
    steps: list[str]
    create_time: datetime
    update_time: datetime
    progress_done: int = 0
    progress_total: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    end_time: datetime | None = None
    # How many times a server began running it: 1 when it starts, more after takeovers.
    attempts: int = 0
    # How many of those attempts an outage cut short.
    outages: int = 0

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.operation_id}"

    @property
    def done(self) -> bool:
        return self.state in DONE


@dataclass(frozen=True)
class Lease:
    """One server's hold on one attempt at an operation: the attempt number fences off
    an older attempt, of this server or another, once the operation was taken over."""

    operation_id: uuid.UUID
    owner: uuid.UUID
    attempt: int
