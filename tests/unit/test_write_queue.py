"""The queue of writes made with synchronous=False: which failures end the writes
queued behind them."""

import asyncio

from cairn._clients.run_operations import _WriteQueue
from cairn.exceptions import DeadlineExceededError, UnavailableError


async def _sent(first: Exception) -> list[str]:
    """What became of a failing write and the two queued behind it."""
    queue = _WriteQueue()
    stored: list[str] = []

    async def fails() -> None:
        raise first

    async def write(name: str) -> None:
        stored.append(name)

    futures = [queue.put(fails()), queue.put(write("a")), queue.put(write("b"))]
    await asyncio.gather(*futures, return_exceptions=True)
    queue._take_errors()  # retrieved: the test reads the outcome from stored
    return stored


async def test_writes_behind_one_no_server_answered_are_not_sent() -> None:
    assert await _sent(DeadlineExceededError("DEADLINE_EXCEEDED")) == []
    assert await _sent(UnavailableError("connections to all backends failing")) == []


async def test_writes_behind_one_the_server_refused_unavailable_are_sent() -> None:
    """A server answering one write DATABASE_BUSY or OBJECT_STORE_UNAVAILABLE (a
    log_image with its store down) says nothing of the writes after it: they were all
    dropped, 20 points of a healthy tracking service never stored."""
    for reason in ("OBJECT_STORE_UNAVAILABLE", "DATABASE_BUSY", "SHUTTING_DOWN"):
        assert await _sent(UnavailableError("busy", reason=reason)) == ["a", "b"]
