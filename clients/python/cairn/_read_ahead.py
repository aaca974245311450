"""Reading a server stream ahead of the loop over it."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Generic, TypeVar

from .exceptions import CancelledError

Item = TypeVar("Item")
_Arrival = Sequence[Item] | BaseException


class ReadAhead(Generic[Item]):
    """The items of a stream of batches, one at a time, while a task of its own reads
    the stream as fast as the server sends it: a loop over the items that takes its
    time never keeps the server waiting, which a server may bound (a metric history's
    STREAM_STALLED). Batches that arrived and were not taken yet wait in memory.

    The reading stops when the stream ends, at `aclose`, or once nothing refers to the
    ReadAhead any more (a loop left with `break`)."""

    def __init__(self, batches: AsyncIterator[Sequence[Item]]) -> None:
        self._batches: AsyncIterator[Sequence[Item]] | None = batches
        self._arrived: asyncio.Queue[_Arrival[Item]] = asyncio.Queue()
        self._reading: asyncio.Task[None] | None = None
        self._ready: collections.deque[Item] = collections.deque()
        self._end: BaseException | None = None

    def __aiter__(self) -> ReadAhead[Item]:
        return self

    async def __anext__(self) -> Item:
        if not self._ready:
            self._ready.extend(await self.next_batch())
        return self._ready.popleft()

    async def next_batch(self) -> list[Item]:
        """Every item that arrived and was not taken, waiting only while there is none;
        raises StopAsyncIteration, or the stream's error, once they are all taken. (The
        sync facade takes items so, one hand-off between threads a batch.)"""
        if self._batches is not None:
            # The task holds the stream and the queue, not this object, so that dropping
            # this object ends the reading (__del__).
            self._reading = asyncio.create_task(_read(self._batches, self._arrived))
            self._batches = None
        taken = list(self._ready)
        self._ready.clear()
        while self._end is None and (not taken or not self._arrived.empty()):
            arrived = await self._arrived.get()
            if isinstance(arrived, BaseException):
                self._end = arrived
            else:
                taken.extend(arrived)
        if taken:
            return taken
        assert self._end is not None
        raise self._end

    async def aclose(self) -> None:
        """Stops reading the stream; the loop over it ends."""
        self._end = StopAsyncIteration()
        self._ready.clear()
        if self._reading is not None:
            self._reading.cancel()
            await asyncio.wait([self._reading])

    def __del__(self) -> None:
        if self._reading is not None and not self._reading.done():
            # The collector may run in any thread, or after the loop closed.
            with contextlib.suppress(RuntimeError):
                self._reading.get_loop().call_soon_threadsafe(self._reading.cancel)


async def _read(
    batches: AsyncIterator[Sequence[Item]], arrived: asyncio.Queue[_Arrival[Item]]
) -> None:
    try:
        async for batch in batches:
            arrived.put_nowait(batch)
    except asyncio.CancelledError:
        # The stream's call was cancelled from outside (its channel closed, say): the
        # loop over it ends with that, not waiting for ever. (After aclose or __del__,
        # nobody takes it.)
        arrived.put_nowait(CancelledError("the stream was cancelled: its client was closed"))
        raise
    except Exception as error:
        arrived.put_nowait(error)
    else:
        arrived.put_nowait(StopAsyncIteration())
