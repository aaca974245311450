"""gRPC servicer of OperationService: starts garbage collection, and reads, lists and
waits for operations."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TypeAlias

import grpc
from google.protobuf import duration_pb2

from cairn.operations.v1 import operations_service_pb2 as api
from cairn.operations.v1 import operations_service_pb2_grpc

from ..common import access, paging
from ..common.errors import invalid_field
from ..common.service import Resources
from . import convert
from .model import Operation
from .runner import Runner
from .store import OperationStore

Context: TypeAlias = grpc.aio.ServicerContext
MAX_WAIT = timedelta(seconds=60)
# Cut-offs further back than this are refused: nothing is that old, and the
# arithmetic of dates would overflow.
MAX_OLDER_THAN = timedelta(days=100 * 366)
# How often a waiting call reads the operation again.
POLL_SECONDS = 0.2


class OperationServicer(operations_service_pb2_grpc.OperationServiceServicer):
    def __init__(self, resources: Resources, runner: Runner) -> None:
        self._store = OperationStore(resources.pool)
        self._runner = runner
        self._stopping = resources.stopping

    async def StartGarbageCollection(
        self, request: api.StartGarbageCollectionRequest, context: Context
    ) -> api.StartGarbageCollectionResponse:
        if not request.HasField("older_than"):
            raise invalid_field("older_than", "is required (zero purges all that is deleted)")
        older_than = _duration(request.older_than, "older_than", MAX_OLDER_THAN)
        record = await self._runner.start_garbage_collection(older_than)
        return api.StartGarbageCollectionResponse(operation=convert.operation(record))

    async def GetOperation(
        self, request: api.GetOperationRequest, context: Context
    ) -> api.GetOperationResponse:
        record = await self._store.get(request.name)
        return api.GetOperationResponse(operation=convert.operation(record))

    async def ListOperations(
        self, request: api.ListOperationsRequest, context: Context
    ) -> api.ListOperationsResponse:
        size = paging.page_size(request.page_size, 100, 1000)
        page = await self._store.list(size, request.page_token)
        return api.ListOperationsResponse(
            operations=[convert.operation(r) for r in page.items],
            next_page_token=page.next_page_token,
        )

    async def WaitOperation(
        self, request: api.WaitOperationRequest, context: Context
    ) -> api.WaitOperationResponse:
        timeout = MAX_WAIT
        if request.HasField("timeout"):
            timeout = min(_duration(request.timeout, "timeout", None), MAX_WAIT)
        record = await self._wait(request.name, timeout)
        return api.WaitOperationResponse(operation=convert.operation(record))

    async def _wait(self, name: str, timeout: timedelta) -> Operation:
        """The operation once done, or as it is when the timeout passes (or when the
        server begins to stop: the caller asks again, elsewhere)."""
        deadline = asyncio.get_running_loop().time() + timeout.total_seconds()
        while True:
            record = await self._store.get(name)
            left = deadline - asyncio.get_running_loop().time()
            if record.done or left <= 0 or self._stopping.is_set():
                return record
            await asyncio.sleep(min(POLL_SECONDS, left))
            await access.admit_again()  # a minute's wait ends with its key or role


def _duration(value: duration_pb2.Duration, field: str, maximum: timedelta | None) -> timedelta:
    """A request's duration: zero or more, and well-formed (seconds and nanos of one sign)."""
    if value.seconds < 0 or value.nanos < 0:
        raise invalid_field(field, "must not be negative")
    if value.nanos >= 1_000_000_000:
        raise invalid_field(field, "nanos must be less than one second")
    if maximum is not None and value.seconds > maximum.total_seconds():
        raise invalid_field(field, f"must be at most {maximum.days} days")
    if maximum is None and value.seconds > MAX_WAIT.total_seconds():
        return MAX_WAIT
    return timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)
