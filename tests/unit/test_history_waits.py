"""`cairn metrics history`'s stream: no deadline over all of it, which printing a long
table passed, but one on each wait for points, which a stuck server would make endless."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from cairn._read_ahead import ReadAhead
from cairn.cli.metrics import _batches
from cairn.exceptions import DeadlineExceededError
from cairn.types import Metric

POINT = Metric("loss", 1.0, 0, 0)


async def _one_batch_then_silence(silence: asyncio.Event) -> AsyncIterator[list[Metric]]:
    yield [POINT]
    await silence.wait()  # a server that answers pings and never sends again


async def test_a_wait_for_points_longer_than_the_timeout_is_deadline_exceeded() -> None:
    silence = asyncio.Event()
    batches = _batches(ReadAhead(_one_batch_then_silence(silence)), 0.2)
    assert await anext(batches) == [POINT]
    with pytest.raises(DeadlineExceededError) as raised:
        await anext(batches)
    assert str(raised.value).endswith("no point of the history arrived in 0.2 s (--timeout)")


async def test_without_a_timeout_the_points_are_waited_for() -> None:
    arrived = asyncio.Event()

    async def later() -> AsyncIterator[list[Metric]]:
        await arrived.wait()
        yield [POINT]

    batches = _batches(ReadAhead(later()), None)
    waiting = asyncio.ensure_future(anext(batches))
    arrived.set()
    assert await waiting == [POINT]
