"""The queue of writes made with synchronous=False: which failures end the writes
queued behind them, and what the end of a client never closed reports."""

import asyncio
import gc
import logging

import pytest

from cairn._clients import run_operations
from cairn._clients.run_operations import _WriteQueue
from cairn.exceptions import DeadlineExceededError, UnavailableError
from tests.conftest import eventually


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


async def test_a_caller_queuing_faster_than_writes_are_sent_waits_for_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The queue took every write at once: a thread logging with synchronous=False
    faster than the writes were answered filled 3 GB in 17 minutes, and each flush
    waited on a longer queue. A write past the bound waits until one is sent."""
    monkeypatch.setattr(run_operations, "MAX_QUEUED_WRITES", 3)
    queue = _WriteQueue()
    sent, answered = asyncio.Event(), asyncio.Event()

    async def write() -> None:
        sent.set()
        await answered.wait()

    futures = [queue.put(write()) for _ in range(4)]  # one sent, three queued: full
    await sent.wait()
    waiting = asyncio.ensure_future(queue.room())
    await _parked(queue)
    assert not waiting.done(), "a full queue took one more write"

    answered.set()
    await asyncio.wait_for(waiting, 5)
    await asyncio.gather(*futures)


async def test_a_caller_waiting_for_room_is_let_go_when_the_queue_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A close begun while callers wait for room ends their wait: they are refused."""
    monkeypatch.setattr(run_operations, "MAX_QUEUED_WRITES", 1)
    queue = _WriteQueue()
    sent = asyncio.Event()

    async def unanswered() -> None:
        sent.set()
        await asyncio.Event().wait()

    queue.put(unanswered())
    queue.put(unanswered())
    await sent.wait()
    waiting = asyncio.ensure_future(queue.room())
    await _parked(queue)
    assert not waiting.done()

    queue.refuse()
    await asyncio.wait_for(waiting, 5)
    queue.give_up()
    assert queue._worker is not None
    await asyncio.wait([queue._worker])


async def _parked(queue: _WriteQueue) -> None:
    """Waits until a caller waits for room: parked on the event only a write leaving
    the queue, or its refusal, sets."""
    await eventually(lambda: bool(queue._taken._waiters), what="a caller waiting for room")


async def test_a_close_cut_short_reads_the_errors_of_writes_failed_before() -> None:
    """A close cut short read the errors of the writes it gave up, but not those of
    writes that had failed before it: an asyncio traceback apiece, "Future exception
    was never retrieved", though each write's wait() raises its own."""
    reported: list[str] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda _, context: reported.append(context["message"])
    )
    queue = _WriteQueue()
    sent = asyncio.Event()

    async def fails() -> None:
        raise UnavailableError("busy", reason="DATABASE_BUSY")

    async def unanswered() -> None:
        sent.set()
        await asyncio.Event().wait()

    queue.put(fails())
    queue.put(unanswered())
    await sent.wait()
    queue.refuse()
    queue.give_up()
    assert queue._worker is not None
    await asyncio.wait([queue._worker])
    del queue
    gc.collect()
    assert [m for m in reported if "never retrieved" in m] == []
