"""The queue of writes made with synchronous=False: which failures end the writes
queued behind them, and what the end of a client never closed reports."""

import asyncio
import gc
import logging
import weakref
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any

import pytest

from cairn._clients import run_operations
from cairn._clients.run_operations import RunOperations, _WriteQueue
from cairn.exceptions import (
    CairnError,
    ClientClosedError,
    DeadlineExceededError,
    UnavailableError,
)
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


class _Held:
    """A write sent that waits to be answered until answered is set: the queue holds
    what is behind it meanwhile."""

    def __init__(self) -> None:
        self.sent, self.answered = asyncio.Event(), asyncio.Event()

    async def write(self) -> None:
        self.sent.set()
        await self.answered.wait()


async def _answered() -> None:
    """A write answered at once."""


async def _parked(queue: _WriteQueue) -> None:
    """Waits until a caller waits for room: in the line only a write leaving the
    queue, or its refusal, moves."""
    await eventually(lambda: bool(queue._waiting), what="a caller waiting for room")


class _Resumes:
    """Counts the steps of coroutines: how often they suspend (parked) and how often
    they are resumed (woken), whatever they wait on."""

    def __init__(self) -> None:
        self.parked = 0
        self.woken = 0

    def count(self, coroutine: Coroutine[Any, Any, None]) -> Awaitable[None]:
        counter = self

        class Counted:
            def __await__(self) -> Generator[Any, Any, None]:
                sent: Any = None
                while True:
                    try:
                        yielded = coroutine.send(sent)
                    except StopIteration:
                        return
                    counter.parked += 1
                    sent = yield yielded
                    counter.woken += 1

        return Counted()


async def test_each_caller_waiting_for_room_is_woken_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every write sent woke every caller waiting for room; one got the place and the
    rest waited again, so the wake-ups grew with the square of the callers waiting:
    12,000 writes queued at once by asyncio.gather took 226 s. Each caller is now
    woken once, in the order it came."""
    monkeypatch.setattr(run_operations, "MAX_QUEUED_WRITES", 10)
    waiting = 300
    queue = _WriteQueue()
    answered = asyncio.Event()
    let_in: list[int] = []

    async def first() -> None:
        await answered.wait()

    async def write() -> None:
        pass

    async def caller(number: int, resumes: _Resumes) -> None:
        await resumes.count(queue.room())
        let_in.append(number)
        queue.put(write())

    queue.put(first())
    for _ in range(run_operations.MAX_QUEUED_WRITES):
        queue.put(write())
    resumes = _Resumes()
    callers = [asyncio.ensure_future(caller(n, resumes)) for n in range(waiting)]
    await eventually(lambda: resumes.parked == waiting, what="every caller waiting for room")

    answered.set()
    await asyncio.wait_for(asyncio.gather(*callers), 30)
    await queue.flush()
    assert resumes.woken == waiting, f"{waiting} callers waiting were woken {resumes.woken} times"
    assert let_in == list(range(waiting))


async def test_a_caller_cancelled_once_woken_passes_its_place_to_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Callers are woken one per place freed: one cancelled (Ctrl-C) after it was woken
    but before it ran must hand the place on, or the next would wait for ever."""
    monkeypatch.setattr(run_operations, "MAX_QUEUED_WRITES", 1)
    queue = _WriteQueue()
    held = _Held()
    sending = queue.put(held.write())
    queue.put(_answered())
    await held.sent.wait()  # the queue is full
    woken, next_in_line = (asyncio.ensure_future(queue.room()) for _ in range(2))
    await eventually(lambda: len(queue._waiting) == 2, what="two callers waiting for room")

    for unsent in queue._unqueue():  # the place freed wakes the first caller alone
        unsent.cancel()
    woken.cancel()
    await asyncio.wait_for(next_in_line, 5)
    assert woken.cancelled()
    held.answered.set()
    await sending


async def test_a_write_past_the_byte_bound_waits_until_bytes_are_given_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bound counted writes, not bytes: 1,000 queued log_image writes of 1 MB held
    1,036 MB with a server that never answered. A write whose bytes would take the
    queue past MAX_QUEUED_BYTES waits until queued writes are taken; the bytes a large
    one gives back let in as many of those waiting as fit, in order."""
    monkeypatch.setattr(run_operations, "MAX_QUEUED_BYTES", 100)
    queue = _WriteQueue()
    held = _Held()
    futures = [queue.put(held.write(), 10), queue.put(_answered(), 90)]
    await held.sent.wait()  # first taken: the queue holds 90 bytes
    small = [asyncio.ensure_future(queue.room(30)) for _ in range(4)]
    await eventually(lambda: len(queue._waiting) == 4, what="four callers waiting for room")
    assert not any(waiting.done() for waiting in small), "writes past the byte bound went"

    held.answered.set()  # the 90 bytes are taken: three of 30 fit, the fourth waits
    await asyncio.wait_for(asyncio.gather(*small[:3]), 5)
    futures += [queue.put(_answered(), 30) for _ in range(3)]
    assert not small[3].done(), "a write past the byte bound went"
    await asyncio.wait_for(small[3], 5)
    await asyncio.gather(*futures)


async def test_a_write_larger_than_the_byte_bound_goes_alone_once_the_queue_is_empty(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write larger than MAX_QUEUED_BYTES is not refused for ever: it waits until
    the queue holds nothing else, then goes."""
    monkeypatch.setattr(run_operations, "MAX_QUEUED_BYTES", 100)
    queue = _WriteQueue()
    held = _Held()
    futures = [queue.put(held.write()), queue.put(_answered(), 1)]
    await held.sent.wait()
    large = asyncio.ensure_future(queue.room(1000))
    await _parked(queue)
    assert not large.done(), "a write past the byte bound went beside another"

    held.answered.set()
    await asyncio.wait_for(large, 5)
    futures.append(queue.put(_answered(), 1000))
    await asyncio.gather(*futures)


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


async def test_a_caller_let_in_but_refused_passes_its_place_to_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A caller let in to a place, then refused because its client's channel had closed
    meanwhile, kept the place: the next in line waited with the queue empty."""
    monkeypatch.setattr(run_operations, "MAX_QUEUED_BYTES", 100)
    queue = _WriteQueue()
    held = _Held()
    futures = [queue.put(held.write(), 10), queue.put(_answered(), 90)]
    await held.sent.wait()  # first taken: the queue holds 90 bytes
    refused = asyncio.ensure_future(queue.enter(_answered(), 30, lambda: True))
    larger = asyncio.ensure_future(queue.room(1000))  # waits for an empty queue
    await eventually(lambda: len(queue._waiting) == 2, what="two callers waiting for room")
    held.answered.set()
    with pytest.raises(ClientClosedError):
        await refused
    await asyncio.wait_for(larger, 5)
    await asyncio.gather(*futures)


class _Call:
    """What a failed gRPC call holds (its metadata, its request): freed or not."""


class _Failed(UnavailableError):
    """The error of a write the server refused, whose frames held its call."""


async def _refused(errors: weakref.WeakSet[BaseException]) -> None:
    call = _Call()  # a variable of the failing frame, as the transport's call is
    error = _Failed(f"busy {id(call)}", reason="DATABASE_BUSY")
    errors.add(error)
    raise error


async def test_a_queue_keeps_one_error_however_many_writes_failed() -> None:
    """Each failed write was kept until a flush, its error's traceback holding its
    call: 20,000 writes to a deleted run, never flushed, held 600 MB. The queue now
    counts them and keeps the first few errors, their frames' variables freed."""
    queue = _WriteQueue()
    errors: weakref.WeakSet[BaseException] = weakref.WeakSet()
    calls = 5000
    for _ in range(calls):
        queue.put(_refused(errors))
    await queue.put(_answered())
    gc.collect()
    # The first KEPT_ERRORS, and the last, a flush's model when none is left to raise.
    assert len(errors) <= run_operations.KEPT_ERRORS + 1, f"the queue held {len(errors)} errors"
    assert not [o for o in gc.get_objects() if isinstance(o, _Call)], "a failed call was kept"
    with pytest.raises(_Failed) as raised:
        await queue.flush()
    assert raised.value.__notes__ == [
        f"{calls - 1} more writes queued with synchronous=False failed"
    ]
    assert raised.value.__traceback__ is not None  # where it failed still shows
    await queue.flush()  # reported once


async def test_an_error_a_write_wait_raised_is_not_counted_by_the_flush() -> None:
    """A write's own wait() raises its error, which the flush then no longer counts;
    the first error's wait() leaves the flush to raise it for the others."""
    queue = _WriteQueue()
    errors: weakref.WeakSet[BaseException] = weakref.WeakSet()
    first, second, third = (
        RunOperations([queue.put(_refused(errors))], queue.failures) for _ in range(3)
    )
    await asyncio.wait([*first._futures, *third._futures])
    with pytest.raises(_Failed) as own:
        await third.wait()
    with pytest.raises(_Failed) as again:  # a handle raises its error each time
        await third.wait()
    assert again.value is own.value
    with pytest.raises(_Failed) as flushed:
        await queue.flush()
    assert flushed.value is not own.value
    assert flushed.value.__notes__ == ["1 more writes queued with synchronous=False failed"]
    with pytest.raises(_Failed) as waited:  # after the flush, its wait() still raises it
        await first.wait()
    assert waited.value is flushed.value

    fourth = RunOperations([queue.put(_refused(errors))], queue.failures)
    fifth = RunOperations([queue.put(_refused(errors))], queue.failures)
    await asyncio.wait(fifth._futures)
    with pytest.raises(_Failed) as reported:
        await fourth.wait()
    with pytest.raises(_Failed) as flushed:  # the other failure, not the one reported
        await queue.flush()
    assert flushed.value is not reported.value
    assert not getattr(reported.value, "__notes__", None)  # what the caller caught is as it was
    assert not getattr(flushed.value, "__notes__", None)  # no other failure
    with pytest.raises(_Failed) as waited:
        await fifth.wait()
    assert waited.value is flushed.value
    await queue.flush()
    del second


async def test_failures_whose_errors_were_not_kept_are_still_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once the errors kept were each raised by their own wait(), a flush still says
    that other writes failed. Before, the flush raised again the error the first
    write's wait() had raised, the caught error took a note after the fact, and the
    second write's error was never raised."""
    monkeypatch.setattr(run_operations, "KEPT_ERRORS", 1)  # the first and the latest
    queue = _WriteQueue()
    errors: weakref.WeakSet[BaseException] = weakref.WeakSet()
    first, second, third = (
        RunOperations([queue.put(_refused(errors))], queue.failures) for _ in range(3)
    )
    await asyncio.wait(third._futures)
    caught = []
    for handle in (first, third):
        with pytest.raises(_Failed) as own:
            await handle.wait()
        caught.append(own.value)
    with pytest.raises(CairnError) as flushed:
        await queue.flush()
    assert flushed.value not in caught
    assert "1 writes queued with synchronous=False failed, their errors not kept" in str(
        flushed.value
    )
    assert all(not getattr(error, "__notes__", None) for error in caught)  # as caught
    await queue.flush()  # reported once
    del second
