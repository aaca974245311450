"""The tracking service: `cairn.tracking.v1.TrackingService`."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import grpc
from google.protobuf.message import Message

from cairn.tracking.v1 import tracking_service_pb2, tracking_service_pb2_grpc

from ..common.access import role_table
from ..common.config import Config
from ..common.paging import RESPONSE_RESERVE
from ..common.service import Resources, ServiceSpec, Unservable
from .retention import forget_batch_ids
from .servicer import REREADS, TrackingServicer
from .store import purge, sizes
from .store.search import MAX_TOKEN_LENGTH


def _register(server: grpc.aio.Server, resources: Resources) -> None:
    tracking_service_pb2_grpc.add_TrackingServiceServicer_to_server(
        TrackingServicer(resources), server
    )


def _run_written(request: Message) -> uuid.UUID | None:
    """The run a write names (its run_id), whose writes take turns (write_slots.py);
    None for a write naming none, or no run id (the write refuses it)."""
    run_id = getattr(request, "run_id", "")
    try:
        return uuid.UUID(run_id) if run_id else None
    except ValueError:
        return None


async def _servable(pool: asyncpg.Pool, config: Config) -> None:
    """Refuses to serve runs that hold more than a response of this server can carry
    beside its framing and the longest page token: they could not be read back. A
    smaller CAIRN_MAX_MESSAGE_BYTES than the one they were written under leaves them so,
    as do runs written before runs were bounded (migration 0010)."""
    room = RESPONSE_RESERVE + MAX_TOKEN_LENGTH
    try:
        runs, largest = await sizes.held_past(pool, config.max_message_bytes - room)
    except asyncpg.LockNotAvailableError:
        raise Unservable(
            "the runs stored could not be counted: a transaction held one of them for "
            f"{sizes.HELD_RUN_WAIT_SECONDS} s (a session left idle in a transaction?); "
            "end it and start again"
        ) from None
    if runs:
        raise Unservable(
            f"{runs} stored run(s) hold more than a response of CAIRN_MAX_MESSAGE_BYTES="
            f"{config.max_message_bytes} carries, the largest {largest} bytes: serve with "
            f"CAIRN_MAX_MESSAGE_BYTES of at least {largest + room} (docs/deploy.md)"
        )


ROLES = role_table(
    viewer=[
        "GetExperiment",
        "GetExperimentByName",
        "SearchExperiments",
        "GetRun",
        "SearchRuns",
        "GetMetricHistory",
        "GetMetricHistoryBulk",
    ],
    editor=[
        "CreateExperiment",
        "RenameExperiment",
        "DeleteExperiment",
        "RestoreExperiment",
        "SetExperimentTag",
        "DeleteExperimentTag",
        "CreateRun",
        "UpdateRun",
        "DeleteRun",
        "RestoreRun",
        "LogMetric",
        "LogParam",
        "SetTag",
        "DeleteTag",
        "LogBatch",
        "LogInputs",
    ],
)

SPEC = ServiceSpec(
    name="tracking",
    full_name=tracking_service_pb2.DESCRIPTOR.services_by_name["TrackingService"].full_name,
    schema="tracking",
    migrations_dir=Path(__file__).parent / "migrations",
    register=_register,
    roles=ROLES,
    background=forget_batch_ids,
    records_requests=True,
    rereads=REREADS,
    purge=purge.purge,
    # Deduplicated in their own write: LogBatch by its request_id field, which it keeps
    # for the run's journal, LogMetric by the call's request id (one round trip).
    not_recorded=frozenset({"LogBatch", "LogMetric"}),
    written_to=_run_written,
    servable=_servable,
)
