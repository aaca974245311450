"""ReadAhead: a stream's items in order, read ahead of the loop over them; its error
after the items that came before it; batches of what arrived for the sync facade."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from cairn._transport import ReadAhead


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
    await asyncio.sleep(0.01)  # the loop's own work, which lets the reader run
    assert read == [1, 2, 3]
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


async def test_closing_stops_the_reading() -> None:
    stopped = asyncio.Event()

    async def endless() -> AsyncIterator[list[int]]:
        try:
            while True:
                yield [1]
                await asyncio.sleep(0.001)
        finally:
            stopped.set()

    ahead = ReadAhead(endless())
    assert await ahead.__anext__() == 1
    await ahead.aclose()
    await asyncio.wait_for(stopped.wait(), timeout=10)
