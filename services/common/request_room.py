"""Room for requests: how many bytes of them a process holds at once.

gRPC reads a unary call's request whole before any handler runs, so the calls of one
client, each of a message near CAIRN_MAX_MESSAGE_BYTES, made the server hold as many
such messages as it sent at once (60 of 14 MB took 670 MB, 150 took 3.5 GB; gzip made
them cost the client 280 times less). Here a call's message is read only once the process has room
for the largest a message may be (`RequestRoom.read`): the interceptor serves every
method with a unary request as a stream (the same on the wire), so that the read waits,
and the server keeps the flow-control window of a stream not being read at
LOOKAHEAD_BYTES, so that a waiting call holds no more of its message than that. Once
read, a call keeps room for twice its request's bytes (they and what they decode to)
until it ends, and gives back the rest. A client stream's first message (an upload's
header) is read the same way; its later messages, which the upload's pace bounds
(artifacts/pace.py), are not counted.

A message must arrive within MESSAGE_SECONDS of being read, or the call ends
RESOURCE_EXHAUSTED (STREAM_STALLED): a client that trickled its message would hold
its room for ever. Callers wait for room in the order they asked. Methods open to every
caller (health, reflection) take room of their own (`OPEN_MESSAGES`), so a caller
without a key never waits for those with one, nor they for it.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from . import messages, metrics
from .errors import InvalidArgument, ResourceExhausted

# What HTTP/2 lets a client send of a message the server is not reading yet (the
# window of each stream; BDP probing, which grows it, is off).
LOOKAHEAD_BYTES = 256 * 1024
# How long a message being read may take to arrive whole.
MESSAGE_SECONDS = 30.0
# How many messages of the largest size the open methods may be reading at once.
OPEN_MESSAGES = 4

_NONE = object()


@dataclass(frozen=True)
class Rooms:
    """The room of the methods that take a key (all, with authentication off), and
    that of the methods open to every caller."""

    keyed: RequestRoom
    open: RequestRoom

    @classmethod
    def of(cls, total: int, largest_message: int) -> Rooms:
        """Rooms for total bytes of requests (CAIRN_REQUEST_MEMORY_BYTES), and for
        OPEN_MESSAGES more, of messages of at most largest_message bytes; in a room of
        less than a read takes, requests are read one at a time."""
        reading = min(2 * largest_message, total)
        return cls(
            RequestRoom(total, reading, "keyed"),
            RequestRoom(OPEN_MESSAGES * reading, reading, "open"),
        )


class RequestRoom:
    """Room for total bytes of requests, each read counted at `reading` until its size
    is known.

    Args:
        total: the bytes the requests being read and handled may take at most.
        reading: the room a message being read takes: twice the largest message.
        name: the room's label on the cairn_request_bytes_held gauge.
    """

    def __init__(self, total: int, reading: int, name: str) -> None:
        self.name = name
        self._total = total
        self._free = total
        self._reading = reading
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        metrics.room_collector.watch(self)

    @property
    def held(self) -> int:
        """The bytes of room taken now."""
        return self._total - self._free

    async def read(self, received: AsyncIterator[Any]) -> tuple[Any, int]:
        """The next message received (None past the last), read once there is room for
        it, and the room the call keeps for it, which it gives back with `give`."""
        await self._take(self._reading)
        try:
            message = await _within_seconds(anext(received, _NONE))
        except BaseException:
            self.give(self._reading)
            raise
        kept = min(self._reading, 2 * messages.size_of(message))
        self.give(self._reading - kept)
        return (None if message is _NONE else message), kept

    async def _take(self, size: int) -> None:
        if not self._waiting and size <= self._free:
            self._free -= size
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append((size, turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # given room as it was cancelled
                self.give(size)
            else:  # its turn is passed over (_wake); those behind it may fit now
                turn.cancel()
                self._wake()
            raise

    def give(self, size: int) -> None:
        """Gives back room a read kept."""
        self._free += size
        self._wake()

    def _wake(self) -> None:
        """Gives room to the waiters it fits, first come first; a waiter cancelled (its
        turn done before its task ran again) is passed over, charged nothing."""
        while self._waiting and (self._waiting[0][1].done() or self._waiting[0][0] <= self._free):
            size, turn = self._waiting.popleft()
            if turn.done():
                continue
            self._free -= size
            turn.set_result(None)


async def _within_seconds(reading: Any) -> Any:
    try:
        async with asyncio.timeout(MESSAGE_SECONDS):
            return await reading
    except TimeoutError:
        raise ResourceExhausted(
            "STREAM_STALLED",
            f"the request did not arrive whole within {MESSAGE_SECONDS:g} s of being "
            "read; send it again, at once",
        ) from None


def no_message() -> InvalidArgument:
    """The refusal of a unary call that sent no message."""
    return InvalidArgument("MALFORMED_MESSAGE", "the call sent no request message")
