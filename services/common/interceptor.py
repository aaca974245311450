"""The one server interceptor: request ids, access, page seals, one log line per call,
errors to statuses.

Every handler of every service (health and reflection included) runs inside
`_CallScope`, which binds the request id into structlog's context, times the call,
turns a `DomainError` into its status code with `google.rpc.ErrorInfo` and
`BadRequest` details, and turns anything unexpected into INTERNAL carrying a
correlation id (the request id) that the log line also holds. No traceback or
SQL text ever reaches a client.

Before a handler of a method with a declared role runs, the gate admits the call for
the project its request names (for a client stream: its first message). Only then is
the request's every value checked (messages.check): that walk costs the event loop
time in proportion to the request, which a caller without a key must not be able to
spend. A request that did not decode is refused before either, at no cost. A large
request is not even decoded before its caller is known to hold a valid key: counting
its lists first (wire.py) costs the loop time too (messages.Unread).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from . import database, logs, messages, metrics
from .access import Gate, Role, metadata_of
from .admission import Admission, admitted
from .errors import DomainError
from .idempotency import Idempotency, passing_bytes
from .page_seals import PageSeals, paged
from .stopping import Stopping

ERROR_DOMAIN = "cairn"
REQUEST_ID_HEADER = "x-request-id"
_log = logs.get("cairn.rpc")

Handler = Callable[[Any, grpc.aio.ServicerContext], Any]


class CallInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every RPC handler in a `_CallScope`, and those with a role in an admission.

    Args:
        gate: admits callers.
        roles: full method name ("/cairn.tracking.v1.TrackingService/GetRun") to the
            least role it needs; methods not listed (health, reflection) are open.
        seals: signs the page tokens of lists (page_seals.py).
    """

    def __init__(
        self,
        gate: Gate,
        roles: dict[str, Role],
        seals: PageSeals,
        idempotency: Idempotency | None = None,
        stopping: Stopping | None = None,
    ) -> None:
        self._gate = gate
        self._roles = roles
        self._seals = seals
        self._idempotency = idempotency
        self._stopping = stopping  # set once the server stops taking calls
        # Method to the handler found for it and its wrapping, made once: gRPC looks the
        # same handler up for every call of a method.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # gRPC answers UNIMPLEMENTED; counted under one name, so
            # that a caller naming methods at random adds no series
            metrics.observe(metrics.UNKNOWN_METHOD, "UNIMPLEMENTED", 0.0)
            return None
        method = handler_call_details.method
        found = self._wrapped.get(method)
        if found is not None and found[0] is handler:
            return found[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        role = self._roles.get(method)
        admission = None if role is None else Admission(self._gate, role, method)
        scope = (method, admission, self._stopping)  # what every wrapping takes
        codec = {
            "request_deserializer": messages.tolerant(
                handler.request_deserializer, messages.request_type(method)
            ),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            schema = self._idempotency.schema_of(method) if self._idempotency else None
            behaviour = handler.unary_unary
            if paged(method):
                behaviour = self._seals.sealing(method, behaviour)
            if schema is not None:
                behaviour = _once(self._idempotency, schema, method, behaviour)  # type: ignore[arg-type]
                codec["response_serializer"] = passing_bytes(handler.response_serializer)
            return grpc.unary_unary_rpc_method_handler(
                _unary(behaviour, *scope, streamed=False), **codec
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _unary(handler.stream_unary, *scope, streamed=True),
                **codec,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _streaming(handler.unary_stream, *scope, streamed=False),
                **codec,
            )
        return grpc.stream_stream_rpc_method_handler(
            _streaming(handler.stream_stream, *scope, streamed=True),
            **codec,
        )


class _Refusals:
    """A client stream that remembers whether one of its messages was refused (by the
    checks or the admission), for `_read_rest`."""

    def __init__(self, received: AsyncIterator[Any]) -> None:
        self.received = received
        self.refused = False

    def refusing(self, messages_of: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async def each() -> AsyncIterator[Any]:
            try:
                async for message in messages_of:
                    yield message
            except DomainError:
                self.refused = True
                raise

        return each()


async def _read_rest(stream: _Refusals, error: BaseException, stopping: Stopping | None) -> None:
    """Reads what the client of a failed stream still sends before it is answered: an
    answer that overtakes its writes reaches it as a bare INTERNAL, its reason lost (an
    upload the object store refused midway was then retried whole, as if the connection
    had broken). A refused stream is read for a few messages; one its handler failed,
    whose caller was admitted, as long as the drain's seconds allow (an upload's chunks:
    at 64 KiB and more they stay undecoded, messages.Unread). A stream cancelled, or cut
    by a stopping server, is answered at once."""
    if stream.refused:
        await messages.drain(stream.received)
    elif isinstance(error, Exception) and not (stopping is not None and stopping.is_set()):
        await messages.drain(stream.received, most=None)


def _once(idempotency: Idempotency, schema: str, method: str, behaviour: Handler) -> Handler:
    """A write's handler, run once per request id (see idempotency.py)."""

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def handle() -> Any:
            result = behaviour(request, context)
            return await result if inspect.isawaitable(result) else result

        return await idempotency.run(schema, method, context, request, handle)

    return call


def _unary(
    behaviour: Handler,
    method: str,
    admission: Admission | None,
    stopping: Stopping | None,
    streamed: bool,
) -> Handler:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        scope = _CallScope(method, context, stopping)
        stream = _Refusals(request) if streamed else None
        active = metrics.STREAMS.labels(method) if streamed else None  # an upload's
        if active is not None:
            active.inc()
        try:
            request = await admitted(admission, request, context, streamed)
            if stream is not None:
                request = stream.refusing(request)
            result = behaviour(request, context)
            if inspect.isawaitable(result):
                result = await result
        except BaseException as exc:
            if stream is not None:
                await _read_rest(stream, exc, stopping)
            await scope.fail(exc)
            raise
        finally:
            if active is not None:
                active.dec()
        scope.finish()
        return result

    return call


def _streaming(
    behaviour: Handler,
    method: str,
    admission: Admission | None,
    stopping: Stopping | None,
    streamed: bool,
) -> Handler:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        scope = _CallScope(method, context, stopping)
        active = metrics.STREAMS.labels(method)
        active.inc()
        try:
            request = await admitted(admission, request, context, streamed)
            async for response in _as_async_iter(behaviour(request, context)):
                yield response
        except BaseException as exc:
            await scope.fail(exc)
            raise
        finally:
            active.dec()
        scope.finish()

    return call


async def _as_async_iter(produced: Any) -> AsyncIterator[Any]:
    if inspect.isawaitable(produced):
        produced = await produced
    if hasattr(produced, "__aiter__"):
        async for item in produced:
            yield item
    elif produced is not None:
        for item in produced:
            yield item


def _let_go(failed: BaseException) -> None:
    """Drops the tracebacks of failed and of the errors behind it, which keep the frames
    they went through alive, with their locals, for as long as the error is. (Not
    frame.clear(): on Python 3.11 it finalizes the generator of a suspended frame.)"""
    errors, seen = [failed], set()
    while errors:
        error = errors.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        error.__traceback__ = None
        errors += [e for e in (error.__cause__, error.__context__) if e is not None]


class _CallScope:
    """Request id, timing and the final log line of one call."""

    def __init__(
        self,
        method: str,
        context: grpc.aio.ServicerContext,
        stopping: Stopping | None = None,
    ) -> None:
        self.method = method
        self.context = context
        self._stopping = stopping
        self.started = time.perf_counter()
        self.request_id = _request_id(context)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=self.request_id)

    def finish(self) -> None:
        code = self.context.code() or grpc.StatusCode.OK
        self._log(code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.OK)

    async def fail(self, exc: BaseException) -> None:
        """Logs the failure, then aborts the call with the right status (never returns)."""
        if isinstance(exc, grpc.aio.AbortError):
            self._log(self.context.code() or grpc.StatusCode.UNKNOWN)
            return
        exc = database.domain_error(exc) or exc
        if isinstance(exc, DomainError):
            self._log(exc.code, reason=exc.reason)
            await self._abort(domain_status(exc), exc)
        if isinstance(exc, NotImplementedError):
            self._log(grpc.StatusCode.UNIMPLEMENTED, reason="NOT_IMPLEMENTED")
            await self._abort(
                _status(
                    grpc.StatusCode.UNIMPLEMENTED,
                    "NOT_IMPLEMENTED",
                    f"{self.method} is not implemented yet",
                    {},
                ),
                exc,
            )
        if isinstance(exc, Exception):
            self._log(grpc.StatusCode.INTERNAL, reason="INTERNAL", exc_info=exc)
            message = f"internal error; correlation id {self.request_id}"
            details = {"correlation_id": self.request_id}
            await self._abort(_status(grpc.StatusCode.INTERNAL, "INTERNAL", message, details), exc)
        # Cancellation and other BaseExceptions: the caller re-raises them. A call still
        # running when a shutdown's grace ends is cancelled by gRPC, which tells its
        # client UNAVAILABLE: the line says what the client was told. One cancelled
        # within the grace was cancelled by its client, or its deadline.
        if self._stopping is not None and self._stopping.has_cut():
            self._log(grpc.StatusCode.UNAVAILABLE, reason="SHUTTING_DOWN")
            return
        self._log(_cancelled_code(self.context))

    async def _abort(self, status: status_pb2.Status, failed: BaseException) -> None:
        """Ends the call with status (never returns). A stream's status waits for the
        messages before it to be taken: when its client goes away instead (one that
        stopped reading, cut for it), the status cannot be sent, and the call ends
        cancelled, as it is; gRPC logged the failed send as an error, with a traceback.
        Until then the call holds only its status and the message gRPC was sending,
        not the frames failed went through (a download's chunk, the message holding
        it), once its line is logged.

        Raises:
            grpc.aio.AbortError: the status was sent.
            asyncio.CancelledError: it could not be.
        """
        _let_go(failed)
        try:
            await self.context.abort_with_status(rpc_status.to_status(status))
        except grpc.aio.AbortError:
            raise
        except Exception:
            raise asyncio.CancelledError from None

    def _log(self, code: grpc.StatusCode, **extra: Any) -> None:
        """Counts and logs the call as its client was told it ended: an answer made past
        the deadline (an error too) never reached it, told DEADLINE_EXCEEDED; the line
        keeps what was answered. No margin: one made just before may well have."""
        seconds = time.perf_counter() - self.started
        told = code
        if code != grpc.StatusCode.DEADLINE_EXCEEDED and _past_deadline(self.context, 0.0):
            told, extra["answered"] = grpc.StatusCode.DEADLINE_EXCEEDED, code.name
        metrics.observe(self.method, told.name, seconds)
        level = "error" if code == grpc.StatusCode.INTERNAL else "info"
        if not logs.enabled(level):  # CAIRN_LOG_LEVEL=warning, say: 5 µs a call saved
            return
        duration_ms = round(seconds * 1000, 3)
        getattr(_log, level)(
            "rpc",
            request_id=self.request_id,
            method=self.method,
            code=told.name,
            duration_ms=duration_ms,
            **extra,
        )


def _cancelled_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """What the client of a call cancelled was told: its deadline passed, or it gave
    up. Counted apart: slow calls hid among callers that left."""
    if _past_deadline(context, margin=DEADLINE_MARGIN_SECONDS):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


# A client's deadline and the server's copy of it pass within a moment of each other:
# the cancel of a client whose deadline passed may arrive with a little time left here.
DEADLINE_MARGIN_SECONDS = 0.05


def _past_deadline(context: grpc.aio.ServicerContext, margin: float) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= margin


def _request_id(context: grpc.aio.ServicerContext) -> str:
    """The caller's id for the call's log lines, or one made here. Only printable ASCII
    is taken, as gRPC clients send headers: a raw HTTP/2 peer, unauthenticated, could
    otherwise write terminal escapes into every console log line of its calls."""
    for key, value in metadata_of(context):
        if key == REQUEST_ID_HEADER and isinstance(value, str) and _loggable(value):
            return value
    return os.urandom(16).hex()  # 32 hex digits, as uuid4().hex, in a fifth of its time


def _loggable(request_id: str) -> bool:
    return 0 < len(request_id) <= 128 and request_id.isascii() and request_id.isprintable()


def domain_status(exc: DomainError) -> status_pb2.Status:
    """The status of a domain error, every text in it clipped (to about 3 KiB in all):
    errors quote the input, and trailers past 16 KiB never reach the client, which sees
    RESOURCE_EXHAUSTED instead."""
    metadata = {key: _clip(value, 128) for key, value in exc.metadata.items()}
    status = _status(exc.code, exc.reason, _clip(exc.message, 1024), metadata)
    if exc.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=_clip(v.field, 128), description=_clip(v.description, 256)
                )
                for v in exc.violations[:4]
            ]
        )
        status.details.append(_pack(bad_request))
    return status


def _status(
    code: grpc.StatusCode, reason: str, message: str, metadata: dict[str, str]
) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata)
    return status_pb2.Status(
        code=getattr(code_pb2, code.name), message=message, details=[_pack(info)]
    )


def _clip(text: str, limit: int) -> str:
    """text cut to at most limit bytes of UTF-8 (an ellipsis marks the cut)."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode(errors="ignore") + "…"


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
