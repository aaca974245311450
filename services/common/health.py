"""The health service: grpc's, plus List, which grpc.health.v1 gained later and the
library still answers UNIMPLEMENTED (newer probes and grpcurl ask for it)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# For liveness probes: SERVING from the start until shutdown, whatever the database does.
# The other names follow the database; a liveness probe on them restarted every pod
# of an outage, and a restarted server exits while its database is away.
LIVENESS = "cairn.liveness"


class HealthServicer(health.aio.HealthServicer):
    """Keeps the status of every name it was told, to answer List with all of them."""

    def __init__(self) -> None:
        super().__init__()
        self._statuses: dict[str, health_pb2.HealthCheckResponse.ServingStatus.ValueType] = {
            "": _SERVING
        }
        self._final = False

    async def set(
        self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    ) -> None:
        if not self._final:  # as the library: nothing changes once shutdown began
            self._statuses[service] = status
        await super().set(service, status)

    async def enter_graceful_shutdown(self) -> None:
        self._final = True
        self._statuses = dict.fromkeys(self._statuses, _NOT_SERVING)
        await super().enter_graceful_shutdown()

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._statuses.items()
            }
        )
