"""The health service: grpc's, plus List, which grpc.health.v1 gained later and the
library still answers UNIMPLEMENTED (newer probes and grpcurl ask for it), and a Watch
that ends once shutdown begins."""

from __future__ import annotations

import asyncio
import collections
import functools

import grpc
from grpc_health.v1 import health, health_pb2
from grpc_status import rpc_status

from .errors import ResourceExhausted
from .interceptor import domain_status
from .peers import client_address, counted_address

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
# For liveness probes: SERVING from the start until shutdown, whatever the database does.
# The other names follow the database; a liveness probe on them restarted every pod
# of an outage, and a restarted server exits while its database is away.
LIVENESS = "cairn.liveness"
# Watch streams a process keeps open at once, on both ports: health needs no key, and
# each stream holds about 9 KiB of the server for as long as its client wants, so past
# this one is refused (RESOURCE_EXHAUSTED, TOO_MANY_WATCHERS) rather than cost memory
# without bound. gRPC's client-side health checking keeps one per client channel, and
# takes a refused watch for a server down: so one client (an address, an IPv6 /64) may
# hold a tenth of them, and cannot take them all from the others.
MAX_WATCHERS = 10_000
MAX_WATCHERS_PER_CLIENT = 1_000


class HealthServicer(health.aio.HealthServicer):
    """Keeps the status of every name it was told, to answer List with all of them and
    Watch with their changes."""

    def __init__(self) -> None:
        super().__init__()
        self._statuses: dict[str, health_pb2.HealthCheckResponse.ServingStatus.ValueType] = {
            "": _SERVING
        }
        self._final = False
        self._changed = asyncio.Condition()
        self._watchers: collections.Counter[str] = collections.Counter()

    async def set(
        self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    ) -> None:
        if not self._final:  # as the library: nothing changes once shutdown began
            self._statuses[service] = status
            await self._notify()
        await super().set(service, status)

    async def enter_graceful_shutdown(self) -> None:
        self._final = True
        self._statuses = dict.fromkeys(self._statuses, _NOT_SERVING)
        await self._notify()
        await super().enter_graceful_shutdown()

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> None:
        """Sends the name's status, then each change of it; ends (OK) once shutdown
        began and NOT_SERVING is sent. The library's stream stays open, a call in
        flight that holds the server's stop until its grace period ends; the client
        watches again elsewhere. Past MAX_WATCHERS at once, or MAX_WATCHERS_PER_CLIENT
        of one client, refused."""
        client = counted_address(client_address(context.peer()))
        if self._watchers.total() >= MAX_WATCHERS:
            await _refuse(context, f"this server keeps {MAX_WATCHERS}", MAX_WATCHERS)
        if self._watchers[client] >= MAX_WATCHERS_PER_CLIENT:
            limit = MAX_WATCHERS_PER_CLIENT
            await _refuse(context, f"this server keeps {limit} of this client's", limit)
        self._watchers[client] += 1
        try:
            await self._watch(request.service, context)
        finally:
            self._watchers[client] -= 1
            if not self._watchers[client]:
                del self._watchers[client]

    async def _watch(self, service: str, context: grpc.aio.ServicerContext) -> None:
        sent: health_pb2.HealthCheckResponse.ServingStatus.ValueType | None = None
        while True:
            async with self._changed:
                await self._changed.wait_for(functools.partial(self._news, service, sent))
                status = self._status(service)
            if status == sent:  # shutdown began, and its status is sent
                return
            # Not under the lock: a client slow to read holds no one's change.
            await context.write(health_pb2.HealthCheckResponse(status=status))
            sent = status

    def _news(
        self, service: str, sent: health_pb2.HealthCheckResponse.ServingStatus.ValueType | None
    ) -> bool:
        """Whether a watcher of service that sent it `sent` last has more to do."""
        return self._final or self._status(service) != sent

    def _status(self, service: str) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
        return self._statuses.get(service, _UNKNOWN)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._statuses.items()
            }
        )


async def _refuse(context: grpc.aio.ServicerContext, kept: str, limit: int) -> None:
    """Ends a Watch past a limit; built here, as the plaintext health port has no
    interceptor to build a refusal's status."""
    refusal = ResourceExhausted(
        "TOO_MANY_WATCHERS",
        f"{kept} health watches open at once already; use Check, or watch again later",
        metadata={"limit": str(limit)},
    )
    await context.abort_with_status(rpc_status.to_status(domain_status(refusal)))
