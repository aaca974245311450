"""The room requests take (request_room.py): first come first served, and every byte
given back whatever happens to a call waiting for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from cairn_server.common.errors import ResourceExhausted
from cairn_server.common.request_room import RequestRoom


async def _one(message: bytes) -> AsyncIterator[bytes]:
    yield message


async def test_reads_wait_for_room_in_the_order_they_came() -> None:
    room = RequestRoom(100, 40, "test")
    first, kept = await room.read(_one(b"x"))
    assert (first, room.held) == (b"x", kept)
    await room._take(40)
    await room._take(40)  # all but what first kept
    assert room.held == 80 + kept
    order: list[int] = []

    async def wait(n: int) -> None:
        await room._take(40)
        order.append(n)

    waiting = [asyncio.ensure_future(wait(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert order == []
    for _ in range(3):
        room.give(40)
        await asyncio.sleep(0)
    assert order == [0, 1, 2]
    await asyncio.gather(*waiting)


async def test_a_waiter_cancelled_as_room_is_given_takes_none_and_stops_no_one() -> None:
    """A waiter's task cancelled (its deadline) and then room given before the task ran
    again: the room was charged to the cancelled turn, and its set_result raised
    InvalidStateError in the call that gave it, which lost what it gave back."""
    room = RequestRoom(80, 40, "cancelled")
    await room._take(40)
    await room._take(40)
    assert REGISTRY.get_sample_value("cairn_request_bytes_held", {"room": "cancelled"}) == 80
    cancelled = asyncio.ensure_future(room._take(40))
    behind = asyncio.ensure_future(room._take(40))
    await asyncio.sleep(0)
    cancelled.cancel()
    room.give(40)  # before the cancelled task runs again
    await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await asyncio.wait_for(behind, 1)
    room.give(40)
    room.give(40)
    assert room.held == 0
    assert REGISTRY.get_sample_value("cairn_request_bytes_held", {"room": "cancelled"}) == 0


async def test_a_read_that_fails_gives_its_room_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cairn_server.common.request_room.MESSAGE_SECONDS", 0.05)

    async def never() -> AsyncIterator[bytes]:
        await asyncio.Event().wait()
        yield b""

    room = RequestRoom(40, 40, "test")
    with pytest.raises(ResourceExhausted, match=r"within 0\.05 s"):
        await room.read(never())
    assert room.held == 0
