"""A call's admission: its request decoded, its caller admitted by the gate for the
project the request names (for a client stream: its first message), then its every
value checked, in that order (interceptor.py says why)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from typing import Any

import grpc
import structlog
from google.protobuf.message import Message

from . import database, messages
from .access import CallInfo, Gate, Role, set_caller, set_readmission
from .errors import ResourceExhausted

# A client stream's first message (an upload's header) must come this soon: until it
# does the call is admitted by no one, and waiting for it without end let callers
# without a key hold memory of the server for ever (as a request head must reach the
# byte endpoint within its HEAD_SECONDS).
FIRST_MESSAGE_SECONDS = 10.0
_END = object()  # a stream that ended before its first message


class Admission:
    """Asks the gate to admit one call of a method, then records who the caller is."""

    def __init__(self, gate: Gate, role: Role, method: str) -> None:
        self._gate = gate
        self._role = role
        self._method = method

    async def __call__(self, context: grpc.aio.ServicerContext, message: Message | None) -> None:
        call, project = CallInfo(self._method, context), project_of(message)
        caller = await self._gate.admit(call, self._role, project)
        set_caller(caller)
        set_readmission(functools.partial(self._again, call, project))
        if caller.key_prefix:  # who called, on the call's log line, when keys are on
            structlog.contextvars.bind_contextvars(
                user=caller.user_id, key_prefix=caller.key_prefix
            )

    async def authenticate(self, context: grpc.aio.ServicerContext) -> None:
        """Refuses a caller without a valid key before its request is read; its role is
        checked once it is, in the project the request names."""
        await self._gate.admit(CallInfo(self._method, context), Role.AUTHENTICATED, None)

    async def _again(self, call: CallInfo, project: str | None) -> None:
        """The gate's admission once more, with a database it cannot reach said as the
        domain error it is (DATABASE_UNAVAILABLE), not as asyncpg's."""
        try:
            await self._gate.admit(call, self._role, project, again=True)
        except Exception as error:
            mapped = database.domain_error(error)
            if mapped is None:
                raise
            raise mapped from error


def project_of(message: Any) -> str | None:
    """The project a request names: its `project` field, or that of a set submessage
    (an upload's header). None when it names none."""
    if not isinstance(message, Message):  # none, or one that did not decode
        return None
    if "project" in message.DESCRIPTOR.fields_by_name:
        return str(message.project)
    for field, value in message.ListFields():
        if isinstance(value, Message) and "project" in field.message_type.fields_by_name:
            return str(value.project)
    return None


async def admitted(
    admission: Admission | None, request: Any, context: grpc.aio.ServicerContext, streamed: bool
) -> Any:
    """The request as the handler gets it: decoded, admitted, then checked throughout.
    A stream is admitted on its first message (or its end, when empty)."""
    if not streamed:
        request = await _read(admission, request, context)
        messages.check_decoded(request)
        if admission is not None:
            await admission(context, request)
        messages.check(request)
        return request

    async def each() -> AsyncIterator[Any]:
        received = aiter(request)
        first = await _first_of(received)
        if first is not _END:
            first = await _read(admission, first, context)
            messages.check_decoded(first)
        if admission is not None:
            await admission(context, None if first is _END else first)
        if first is _END:
            return
        messages.check(first)
        yield first
        async for message in received:
            message = _read_admitted(admission, message)
            messages.check_decoded(message)
            messages.check(message)
            yield message

    return each()


async def _read(
    admission: Admission | None, request: Any, context: grpc.aio.ServicerContext
) -> Any:
    """request decoded; one left unread (large: messages.Unread) only once its caller
    holds a valid key."""
    if admission is not None and isinstance(request, messages.Unread):
        await admission.authenticate(context)
    return _read_admitted(admission, request)


def _read_admitted(admission: Admission | None, request: Any) -> Any:
    """request decoded, its caller admitted (or authenticated). A method open to every
    caller (health, reflection) takes requests of a few bytes: a large one is refused
    unread, or anyone could make the loop count it (20 of 400 KB held every other call
    3.75 s)."""
    if admission is None and isinstance(request, messages.Unread):
        raise messages.unread_refusal()
    return messages.decoded(request)


async def _first_of(received: AsyncIterator[Any]) -> Any:
    """A client stream's first message (_END for none), within FIRST_MESSAGE_SECONDS."""
    try:
        async with asyncio.timeout(FIRST_MESSAGE_SECONDS):
            return await anext(received, _END)
    except TimeoutError:
        raise ResourceExhausted(
            "STREAM_STALLED",
            f"the stream sent no message in its first {FIRST_MESSAGE_SECONDS:g} s; "
            "send its first message (an upload's header) at once",
        ) from None
