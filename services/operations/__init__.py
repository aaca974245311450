"""Long-running operations: `cairn.operations.v1.OperationService`.

Every server hosts it next to auth (see `catalog.select`): an operation runs the steps
of the services hosted where it was started, and a server hosting the same services
takes it over when that one stops. Its schema also holds the queue of artifact
locations other services let go of (`queue.py`), drained by the artifacts service.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc

from cairn.operations.v1 import operations_service_pb2, operations_service_pb2_grpc

from ..common.access import role_table
from ..common.service import Resources, ServiceSpec
from .runner import Runner
from .servicer import OperationServicer

# Operations are server-wide: what they remove and report spans every project.
ROLES = role_table(
    global_admin=["StartGarbageCollection", "GetOperation", "ListOperations", "WaitOperation"]
)
FULL_NAME = operations_service_pb2.DESCRIPTOR.services_by_name["OperationService"].full_name


def spec(hosted: Sequence[ServiceSpec]) -> ServiceSpec:
    """The operations service of a server hosting `hosted` (whose purge steps its
    garbage collection runs); one per server, as `catalog.select` makes it."""
    runner: Runner | None = None

    def register(server: grpc.aio.Server, resources: Resources) -> None:
        # Made once, with the server: its calls start operations its background work
        # runs and takes over.
        nonlocal runner
        runner = Runner(resources, hosted)
        operations_service_pb2_grpc.add_OperationServiceServicer_to_server(
            OperationServicer(resources, runner), server
        )

    async def background(resources: Resources) -> None:
        assert runner is not None, "started before it was registered"
        await runner.serve()

    return ServiceSpec(
        name="operations",
        full_name=FULL_NAME,
        schema="operations",
        migrations_dir=Path(__file__).parent / "migrations",
        register=register,
        roles=ROLES,
        background=background,
        records_requests=True,
    )
