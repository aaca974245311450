"""The queue of writes made with synchronous=False: which failures end the writes
queued behind them, and what the end of a client never closed reports."""

import asyncio
import logging

import pytest

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


async def test_a_write_given_up_while_sent_is_said_to_maybe_be_stored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The warning of a client ended unclosed counted the write given up while it was
    sent as not stored, though the server may have stored it."""
    queue = _WriteQueue()
    started = asyncio.Event()

    async def unanswered() -> None:
        started.set()
        await asyncio.Event().wait()  # no answer ever comes

    async def write() -> None:
        pass

    queue.put(unanswered())
    queue.put(write())
    await started.wait()
    with caplog.at_level(logging.WARNING, "cairn"):
        await queue.end(patience=0.05)
    [warning] = [record.getMessage() for record in caplog.records]
    assert warning.startswith("2 writes queued with synchronous=False were not stored")
    assert "the one given up while it was sent may have been" in warning
