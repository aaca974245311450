"""What a service contributes to the shared runtime: its servicer, role table and migrations."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import grpc
from google.protobuf.message import Message

from .access import Gate, RoleTable
from .config import Config
from .idempotency import Idempotency, Reread
from .read_slots import ReadSlots
from .write_slots import WriteSlots


@dataclass(frozen=True)
class Resources:
    """What a servicer may use: the settings, the database pool, the server's record of
    request ids, the slots of writes to one thing (write_slots.py) and of long reads
    (read_slots.py), and whether the server is shutting down (set when it stops taking
    calls)."""

    config: Config
    pool: asyncpg.Pool
    idempotency: Idempotency
    # The server's, for its pool; one slot for a servicer made alone.
    write_slots: WriteSlots = field(default_factory=lambda: WriteSlots(1, 1))
    read_slots: ReadSlots = field(default_factory=lambda: ReadSlots(1, 5.0))
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


class Purge(Protocol):
    """What a service's purge step is given by the garbage collection running it
    (services/operations): the cut-off, and where it reports and hands on its work."""

    cutoff: datetime  # things soft-deleted before this go

    async def plan(self, items: int) -> None:
        """Adds items the step found to do to the operation's progress total."""

    async def done(self, kind: str, items: int, progress: int | None = None) -> None:
        """Counts items of a kind removed; progress (default: items) advances `done`."""

    async def discard(
        self, conn: asyncpg.Connection, locations: list[str], closed: bool = False
    ) -> None:
        """Queues artifact locations (cairn-artifacts://<project>/<path>) whose objects
        the artifacts service is to delete, in conn's transaction: they are queued
        exactly when the rows that referred to them are gone. Closed locations (runs'
        directories) are never taken again: nothing is written under them after."""


class Unservable(Exception):
    """What is stored cannot be served under the settings given: the server does not
    start, and the message tells the operator what to change."""


@dataclass(frozen=True)
class ServiceSpec:
    """One Cairn service, as the runtime hosts it.

    Attributes:
        name: short name used on the command line, e.g. "tracking".
        full_name: the gRPC service name, also its health-check name.
        schema: the PostgreSQL schema holding the service's tables.
        migrations_dir: folder of the service's NNNN_description.sql files.
        register: adds the service's servicer to a server.
        roles: the least role each of its RPCs needs; every RPC must be listed.
        gate: for the one service that authenticates callers (auth), builds the gate
            the interceptor asks to admit every call.
        background: work the service does beside its calls while it is served (the
            artifact janitor); started with the server, cancelled when it stops.
        records_requests: whether its writes are run once per request id
            (idempotency.py); its schema then has a `requests` table.
        purge: the service's step of garbage collection (docs/operations.md): removes
            for good what was soft-deleted before `Purge.cutoff`, in bounded batches,
            reporting as it goes; run again after a restart, so it must pick up
            whatever is left.
        not_recorded: writes that deduplicate their request ids themselves instead
            (docs/architecture.md, "Exactly-once writes"): their answers hold secrets
            never stored, or a recorded call's rollback would undo what they must keep.
        rereads: recorded writes whose answer holds a stored object larger than its
            request (tags, properties, latest versions), to how their repeat reads it
            again when the answer is too large to keep (idempotency.Reread).
        written_to: what a write of the service writes to (tracking's run,
            the registry's model or version), whose writes take turns for the pool's
            connections (write_slots.py); None for a write to nothing in particular.
        servable: checks, after migrations and before the server takes calls, that
            what the service stores can be answered under the settings; raises
            Unservable otherwise.
    """

    name: str
    full_name: str
    schema: str
    migrations_dir: Path
    register: Callable[[grpc.aio.Server, Resources], None]
    roles: RoleTable
    gate: Callable[[Resources], Gate] | None = None
    background: Callable[[Resources], Coroutine[Any, Any, None]] | None = None
    records_requests: bool = False
    purge: Callable[[Resources, Purge], Coroutine[Any, Any, None]] | None = None
    not_recorded: frozenset[str] = frozenset()
    rereads: Mapping[str, Reread] = field(default_factory=dict)
    written_to: Callable[[Message], Hashable | None] | None = None
    servable: Callable[[asyncpg.Pool, Config], Coroutine[Any, Any, None]] | None = None

    def __post_init__(self) -> None:
        # The schema name is spliced into SQL; allow nothing but a plain identifier.
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", self.schema):
            raise ValueError(f"schema {self.schema!r} is not a plain identifier")
