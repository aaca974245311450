"""The tracking service: `cairn.tracking.v1.TrackingService`."""

from __future__ import annotations

from pathlib import Path

import grpc

from cairn.tracking.v1 import tracking_service_pb2, tracking_service_pb2_grpc

from ..common.access import role_table
from ..common.service import Resources, ServiceSpec
from .retention import forget_batch_ids
from .servicer import TrackingServicer
from .store import purge


def _register(server: grpc.aio.Server, resources: Resources) -> None:
    tracking_service_pb2_grpc.add_TrackingServiceServicer_to_server(
        TrackingServicer(resources), server
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
    purge=purge.purge,
    # Deduplicated in their own write: LogBatch by its request_id field, which it keeps
    # for the run's journal, LogMetric by the call's request id (one round trip).
    not_recorded=frozenset({"LogBatch", "LogMetric"}),
)
