"""The artifact service's transfer slots: a call waiting for one as the server stops is
told SHUTTING_DOWN, and no way out of the wait keeps a slot or gives one twice."""

import asyncio

import pytest

from cairn_server.artifacts import slots
from cairn_server.common.errors import Unavailable
from tests.conftest import eventually


async def _waiting(free: asyncio.Semaphore, stopping: asyncio.Event) -> asyncio.Task[None]:
    """A call waiting for a slot of free, whose only slot is taken: queued on it."""
    await free.acquire()
    waiting = asyncio.ensure_future(slots.taken(free, stopping))
    # The semaphore's queue is its own (no public count); it is what the call waits in.
    await eventually(lambda: bool(free._waiters), what="the call queued for a slot")
    assert not waiting.done()
    return waiting


async def test_a_call_waiting_as_the_server_stops_is_told_and_keeps_no_slot() -> None:
    free, stopping = asyncio.Semaphore(1), asyncio.Event()
    waiting = await _waiting(free, stopping)
    stopping.set()
    with pytest.raises(Unavailable) as raised:
        await waiting
    assert raised.value.reason == "SHUTTING_DOWN"
    free.release()  # the call holding the slot ends: the slot is free, once
    await asyncio.wait_for(free.acquire(), 1)
    assert free.locked()


async def test_a_slot_freed_as_the_server_stops_is_taken() -> None:
    """Granted as the stop began, the slot is the call's: it goes on, and releases it."""
    free, stopping = asyncio.Semaphore(1), asyncio.Event()
    waiting = await _waiting(free, stopping)
    free.release()
    stopping.set()
    await waiting
    assert free.locked()


async def test_a_call_cancelled_as_it_waits_keeps_no_slot() -> None:
    free, stopping = asyncio.Semaphore(1), asyncio.Event()
    waiting = await _waiting(free, stopping)
    free.release()  # granted, and the call cancelled before it resumes
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.wait_for(free.acquire(), 1)
    assert free.locked()
