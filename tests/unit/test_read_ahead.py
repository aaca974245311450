"""ReadAhead: a stream's items in order, read ahead of the loop over them; its error
after the items that came before it; batches of what arrived for the sync facade; the
reading stopped by closing, by leaving the loop, and ended by a cancelled stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from cairn._read_ahead import ReadAhead
from cairn.exceptions import CancelledError
from tests.conftest import eventually


async def _batches(*batches: list[int], error: Exception | None = None) -> AsyncIterator[list[int]]:
    for batch in batches:
        yield batch
    if error is not None:
        raise error


async def test_items_come_in_order_across_batches() -> None:
    items = [item async for item in ReadAhead(_batches([1, 2], [], [3]))]
    assert items == [1, 2, 3]


async def test_the_stream_is_read_while_the_loop_dwells() -> None:
    read: list[int] = []

    async def stream() -> AsyncIterator[list[int]]:
        for batch in ([1], [2], [3]):
            read.extend(batch)
            yield batch

    ahead = ReadAhead(stream())
    assert await ahead.__anext__() == 1
    await eventually(lambda: read == [1, 2, 3])  # while the loop does its own work
    assert await ahead.next_batch() == [2, 3]  # everything that arrived, in one go


async def test_an_error_comes_after_the_items_before_it() -> None:
    ahead = ReadAhead(_batches([1], [2], error=ValueError("broken")))
    items = []
    with pytest.raises(ValueError, match="broken"):
        async for item in ahead:
            items.append(item)
    assert items == [1, 2]
    with pytest.raises(ValueError, match="broken"):  # and stays the answer
        await ahead.next_batch()


async def test_closing_stops_the_reading_and_ends_the_loop() -> None:
    stream = _Endless()
    ahead = ReadAhead(stream.batches())
    assert await ahead.__anext__() == 1
    await ahead.aclose()
    assert stream.stopped
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(ahead.__anext__(), timeout=10)


async def test_a_loop_left_without_closing_stops_the_reading() -> None:
    """As an async generator's finalizer would: `break`, and nothing refers to it."""
    stream = _Endless()
    async for _ in ReadAhead(stream.batches()):
        break
    await eventually(lambda: stream.stopped)


async def test_a_stream_cancelled_from_outside_ends_the_loop_with_an_error() -> None:
    """grpc ends a stream whose channel was closed with asyncio.CancelledError in the
    task reading it: the loop gets the client's CancelledError, not a wait for ever."""

    async def cut() -> AsyncIterator[list[int]]:
        yield [1]
        raise asyncio.CancelledError

    ahead = ReadAhead(cut())
    assert await ahead.__anext__() == 1
    with pytest.raises(CancelledError):
        await asyncio.wait_for(ahead.__anext__(), timeout=10)


class _Endless:
    """A stream that never ends, and whether it was stopped."""

    def __init__(self) -> None:
        self.stopped = False

    async def batches(self) -> AsyncIterator[list[int]]:
        try:
            while True:
                yield [1]
                await asyncio.sleep(0.001)
        finally:
            self.stopped = True
