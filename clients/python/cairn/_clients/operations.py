"""`OperationsClient`: garbage collection, and following long-running operations."""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf import duration_pb2

from .._argument_error import invalid_argument
from .._backoff import backoff
from .._base import BaseClient
from .._headers import Metadata
from .._numbers import real, whole_or_zero
from ..exceptions import (
    CairnError,
    CancelledError,
    DeadlineExceededError,
    OperationFailedError,
    OperationTimeoutError,
    UnavailableError,
)
from ..operations.v1 import operations_service_pb2 as api
from ..operations.v1 import operations_service_pb2_grpc
from ..types._arguments import proto
from ..types._operations import Operation
from ..types._operations_from_proto import operation_from_proto
from ..types._paging import ListOptions, PagedList, Pager

# How long one WaitOperation call waits on the server; the call's own deadline is a
# little longer, so the server answers before the deadline cuts it off.
WAIT_CHUNK_SECONDS = 10.0
# The shortest wait a report takes: shorter (report_every=0) asked the server again and
# again without pause.
MIN_REPORT_SECONDS = 0.1
_DEADLINE_MARGIN_SECONDS = 10.0
# A server out of reach (a restart, a deploy) is asked again after these waits, the
# first and the longest, doubling between: the operation goes on meanwhile, handed to
# the next server, and the channel's own retries cover under a second.
OUTAGE_BACKOFF_SECONDS = (0.2, 5.0)
# What a server that stops or is gone answers: CANCELLED to the calls that reach it as
# it shuts down, UNAVAILABLE once nothing listens; and a call's own deadline passing
# (DEADLINE_EXCEEDED of no reason) where it stopped answering (a partition, a frozen
# host), which ended every wait, that of no timeout too (`_out_of_reach`).
_OUT_OF_REACH = (UnavailableError, CancelledError, DeadlineExceededError)
# How much past a wait's own deadline its last call may take to be answered.
_LAST_CALL_MARGIN_SECONDS = 1.0

_log = logging.getLogger("cairn")

ProgressCallback = Callable[[Operation], Awaitable[None] | None]


class OperationsClient(BaseClient):
    """Async client of `cairn.operations.v1.OperationService`, which every Cairn
    server hosts. Global admins only. Operations are named "operations/<uuid>".

    `start_garbage_collection`, `get_operation` and `get_operations` also take
    keyword-only `timeout=` and `metadata=`; `list_operations` returns a Pager (its
    `page_size` is how many each call asks for), and `wait_operation` and
    `wait_job_completion` make several calls. It talks to the client's server_address,
    whose server runs the steps of the services it hosts (docs/operations.md).
    """

    def _bind(self, channel: Any) -> None:
        self._stub = operations_service_pb2_grpc.OperationServiceStub(channel)

    async def start_garbage_collection(
        self,
        older_than: datetime.timedelta,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> Operation:
        """Starts removing for good what was soft-deleted more than `older_than` ago
        (experiments, runs, their artifacts) and pruning expired request ids.

        Returns at once with the operation, PENDING or RUNNING; follow it with
        `get_operation` or `wait_operation`.

        Raises:
            InvalidArgumentError: for a negative older_than.
        """
        request = proto(api.StartGarbageCollectionRequest, older_than=_duration(older_than))
        response = await self._transport.unary(
            self._stub.StartGarbageCollection, request, timeout=timeout, metadata=metadata
        )
        return operation_from_proto(response.operation)

    async def get_operation(
        self, name: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> Operation:
        """Raises NotFoundError (OPERATION_NOT_FOUND) for a name no operation has."""
        response = await self._transport.unary(
            self._stub.GetOperation,
            proto(api.GetOperationRequest, name=name),
            timeout=timeout,
            metadata=metadata,
        )
        return operation_from_proto(response.operation)

    async def get_operations(
        self,
        options: ListOptions | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> PagedList[Operation]:
        """One page of operations, newest first (100 by default); for Pager."""
        options = options or ListOptions()
        request = proto(
            api.ListOperationsRequest,
            page_size=whole_or_zero(options.limit, "limit", 32),
            page_token=options.next_page_token or "",
        )
        response = await self._transport.unary(
            self._stub.ListOperations, request, timeout=timeout, metadata=metadata
        )
        page = PagedList(
            [operation_from_proto(o) for o in response.operations], response.next_page_token
        )
        options.next_page_token = page.next_page_token
        return page

    def list_operations(self, page_size: int | None = None) -> Pager[Operation]:
        """Every operation, newest first: `async for operation in client.list_operations()`."""
        pager = Pager(self.get_operations)
        return pager if page_size is None else pager.page_size(page_size)

    async def wait_operation(
        self,
        name: str,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        report_every: float = WAIT_CHUNK_SECONDS,
    ) -> Operation:
        """Waits until the operation is done (SUCCEEDED or FAILED) and returns it.

        A server out of reach (restarted, say) is asked again, after waits growing to
        5 seconds, until the timeout passes: its operation goes on meanwhile.

        Args:
            name: "operations/<uuid>".
            timeout: seconds to wait at most; None waits as long as it takes.
            on_progress: called (or awaited) with the operation each time the server
                reports on it, every `report_every` seconds and when it ends.
            report_every: how long each `WaitOperation` call waits on the server (from
                0.1 to 10 seconds): shorter for a livelier progress report.

        Raises:
            OperationTimeoutError: the timeout passed first (the operation goes on).
            ValueError: a timeout of NaN.
            UnavailableError: the server was out of reach from the first call until the
                timeout passed.
            NotFoundError: no operation has the name.
        """
        if timeout is not None and math.isnan(real(timeout, "timeout")):  # never reached
            raise invalid_argument("timeout", "must be seconds (0 or less asks once), not nan")
        report_every = real(report_every, "report_every")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        # Written so that NaN, which no comparison holds, takes the least too.
        chunk = (
            min(report_every, WAIT_CHUNK_SECONDS)
            if report_every >= MIN_REPORT_SECONDS
            else MIN_REPORT_SECONDS
        )
        seen: Operation | None = None
        while True:
            try:
                if seen is None:  # a wrong address or TLS fails at once, as any call
                    operation = await self._wait_once(name, chunk, deadline)
                else:
                    operation = await self._wait_through_outages(name, chunk, deadline)
            except _OUT_OF_REACH as error:
                if seen is None or not _out_of_reach(error):
                    raise
                raise OperationTimeoutError(seen, timeout or 0.0) from error
            seen = operation
            if on_progress is not None:
                reported = on_progress(operation)
                if reported is not None:
                    await reported
            if operation.done:
                return operation
            if deadline is not None and loop.time() >= deadline:
                raise OperationTimeoutError(operation, timeout or 0.0)

    async def wait_job_completion(self, job_id: str, max_wait_timeout: int = 3000) -> Operation:
        """ML cube's waiter: as `wait_operation`, but a FAILED operation raises.

        Raises:
            OperationTimeoutError: max_wait_timeout seconds passed first (ML cube's
                JobWaitTimeoutException).
            OperationFailedError: the operation failed (JobFailureException).
            NotFoundError: no operation has the name (JobNotFoundException).
        """
        operation = await self.wait_operation(job_id, timeout=max_wait_timeout)
        if operation.state.value == "FAILED":
            raise OperationFailedError(operation)
        return operation

    async def _wait_through_outages(
        self, name: str, chunk: float, deadline: float | None
    ) -> Operation:
        """One WaitOperation of up to chunk seconds, asked again while the server is out
        of reach; raises its last error once the deadline (loop time) passes."""
        loop = asyncio.get_running_loop()
        rests = backoff(*OUTAGE_BACKOFF_SECONDS)
        while True:
            try:
                return await self._wait_once(name, chunk, deadline)
            except _OUT_OF_REACH as error:
                left = math.inf if deadline is None else deadline - loop.time()
                if left <= 0 or not _out_of_reach(error):
                    raise
                rest = min(next(rests), left)
                _log.info("asking for %s again in %.1f s after %s", name, rest, error)
                await asyncio.sleep(rest)

    async def _wait_once(self, name: str, chunk: float, deadline: float | None) -> Operation:
        """One WaitOperation of up to chunk seconds on the server, ending by deadline
        (loop time) but for a second's margin for the answer."""
        seconds = _chunk_before(deadline, chunk)
        request = proto(api.WaitOperationRequest, name=name)
        request.timeout.FromTimedelta(datetime.timedelta(seconds=seconds))
        margin = _DEADLINE_MARGIN_SECONDS
        if deadline is not None:  # a server that stops answering overran it by 10 s
            left = deadline - asyncio.get_running_loop().time() - seconds
            margin = min(margin, max(left, 0.0) + _LAST_CALL_MARGIN_SECONDS)
        response = await self._transport.unary(
            self._stub.WaitOperation, request, timeout=seconds + margin
        )
        return operation_from_proto(response.operation)


def _out_of_reach(error: CairnError) -> bool:
    """Whether error says the server is out of reach (or stopped answering), not that
    it answered: a DEADLINE_EXCEEDED of the server's own carries a reason."""
    return not (isinstance(error, DeadlineExceededError) and error.reason is not None)


def _duration(value: datetime.timedelta) -> duration_pb2.Duration:
    if not isinstance(value, datetime.timedelta):  # protobuf's error named no argument
        raise invalid_argument("older_than", f"{value!r} is no datetime.timedelta")
    duration = duration_pb2.Duration()
    duration.FromTimedelta(value)
    return duration


def _chunk_before(deadline: float | None, chunk: float) -> float:
    """The seconds one WaitOperation may take: chunk, or less where deadline (loop
    time) comes first."""
    left = math.inf if deadline is None else deadline - asyncio.get_running_loop().time()
    return max(0.0, min(left, chunk))
