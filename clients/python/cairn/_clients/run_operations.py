"""MLflow's `synchronous=False`: a write that returns at once and runs in the background."""

from __future__ import annotations

import asyncio
import logging
import traceback
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeGuard

from .._transport import DEFAULT_TIMEOUT, Transport
from ..exceptions import CairnError, ClientClosedError, DeadlineExceededError, UnavailableError

_log = logging.getLogger("cairn")


class RunOperations:
    """Writes started with `synchronous=False` (MLflow's `RunOperations`).

    The writes run on the client's event loop; `wait()` waits for all of them and
    raises the first error one of them met. A write is sent with the same request id
    and retry table as its synchronous form, so waiting changes when, never whether.
    """

    _sync_view = True  # the sync facade hands it out with wait() made sync

    def __init__(
        self, futures: Iterable[asyncio.Future[Any]], failures: _Failures | None = None
    ) -> None:
        self._futures = list(futures)
        self._failures = _Failures() if failures is None else failures

    async def wait(self) -> None:
        """Waits for every write; raises the first error among them (which a flush
        then no longer raises). A wait given up (a timeout, Ctrl-C) leaves the writes
        to be sent, as MLflow's does: gather cancelled them."""
        if self._futures:
            await asyncio.wait(self._futures)
        self._raise_first()

    def _raise_first(self) -> None:
        failed = [f for f in self._futures if not f.cancelled() and f.exception()]
        for future in failed:
            self._failures.reported(future)
        if failed:
            raise failed[0].exception()  # type: ignore[misc]

    def done(self) -> bool:
        return all(future.done() for future in self._futures)

    def _off_the_loop(self, name: str) -> Callable[[], Any] | None:
        """The method name as a plain call, once every write is done: it needs no event
        loop then. The sync facade calls it so, its loop ended with its client's close,
        which made `wait()` of writes stored raise ClientClosedError."""
        if not self.done():
            return None
        return {"done": self.done, "wait": self._raise_first}.get(name)


# The writes a queue holds: a caller queuing faster than they are sent (a loop logging
# on, each write a round trip) waits for room, as a full buffer makes it. Unbounded, a
# thread logging on filled 3 GB in 17 minutes, and each flush waited on a longer queue.
MAX_QUEUED_WRITES = 1000
# The bytes of requests a queue holds: a queued log_image holds its encoded files, so
# 1,000 queued 1 MB images held 1,036 MB (4K images, about 25 MB each, would hold 25 GB).
# A single write larger than this goes alone, once the queue is empty.
MAX_QUEUED_BYTES = 64 * 1024 * 1024


# Errors of failed writes kept for a flush: the first ones not reported, so that a
# wait() that raised one leaves the next for the flush, and the latest.
KEPT_ERRORS = 8


class _Failures:
    """The writes failed since the last flush and not reported by their own `wait()`:
    how many, and the errors of the first KEPT_ERRORS and the latest of them, the first
    of which a flush raises. Not every failure's error: each one's traceback kept its
    gRPC call, metadata and request alive, and 20,000 writes to a deleted run, never
    flushed, held 600 MB. A caller holding a write's RunOperations holds its error."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.count = 0
        self._kept: list[BaseException] = []
        # The failed futures counted, while a caller holds them: its wait() uncounts one.
        self._counted: weakref.WeakSet[asyncio.Future[Any]] = weakref.WeakSet()

    def add(self, error: BaseException, future: asyncio.Future[Any] | None = None) -> None:
        """Counts a write failed with error; future is its caller's, if it has one."""
        self.count += 1
        if future is not None:
            self._counted.add(future)
        _free_frames(error)
        if len(self._kept) > KEPT_ERRORS:  # the last place holds the latest
            self._kept[-1] = error
        else:
            self._kept.append(error)

    def reported(self, future: asyncio.Future[Any]) -> None:
        """future's `wait()` raised its error: a flush no longer counts or raises it."""
        if future not in self._counted:  # reported before, or by a flush
            return
        self._counted.discard(future)
        self.count -= 1
        error = future.exception()
        self._kept = [kept for kept in self._kept if kept is not error]

    def take(self) -> BaseException | None:
        """The first error not reported since last taken, noting how many more writes
        failed; None when none failed unreported. Starts counting anew."""
        kept, count = self._kept, self.count
        self._reset()
        if not count:
            return None
        if not kept:  # those kept were each raised by its wait()
            return CairnError(
                f"{count} writes queued with synchronous=False failed, their errors not "
                "kept (those kept were each raised by its own wait())"
            )
        error = kept[0]
        if count > 1:
            error.add_note(f"{count - 1} more writes queued with synchronous=False failed")
        return error


def _free_frames(error: BaseException) -> None:
    """Clears the variables of the frames error's traceback (and those of the errors it
    was raised from) passed through, the gRPC call among them, keeping the traceback."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        traceback.clear_frames(cause.__traceback__)
        cause = cause.__cause__ or cause.__context__


class _WriteQueue:
    """The background writes of one client, sent one at a time in the order they were
    made: two writes to one key (a tag set twice) land as the caller wrote them. It
    holds MAX_QUEUED_WRITES, and MAX_QUEUED_BYTES of requests, at most (`room`).

    A failed write is counted until `flush` (or its RunOperations' `wait`) reports it,
    so an error is never lost because the caller did not wait for it; the first
    one's error is kept for the flush (`_Failures`). Once `refuse`d (the client's close
    began), it takes no more writes.
    """

    def __init__(self) -> None:
        # Each write with its future and its size in bytes.
        self._writes: deque[tuple[Awaitable[Any], asyncio.Future[Any], int]] = deque()
        self._bytes = 0  # the sizes of the writes in _writes
        self._worker: asyncio.Task[None] | None = None
        # The write being sent (or the last one sent).
        self._sending: asyncio.Future[Any] | None = None
        # Set while `end` waits: it reports the writes it gives up on itself.
        self._ending = False
        # Set once the client's close began: a write queued later raises ClientClosedError.
        self.refusing = False
        self.failures = _Failures()
        # Callers waiting for room, first come first let in, each woken alone: one event
        # woke them all at every write sent, 12,000 waiting took 226 s, 6,000 27 s.
        self._waiting: deque[tuple[asyncio.Future[bool], int]] = deque()
        # The places (and bytes) of callers woken but not yet back to queue their write,
        # kept for them: a caller that did not wait would take them otherwise.
        self._promised = 0
        self._promised_bytes = 0

    def refuse(self) -> None:
        """Takes no more writes: the client's close began, and waits only for those
        queued before it (a thread logging on kept it waiting for ever)."""
        self.refusing = True
        while self._waiting:  # those waiting for room are refused too
            waiter = self._waiting.popleft()[0]
            if not waiter.done():  # else cancelled: its caller leaves by itself
                waiter.set_result(False)

    async def room(self, size: int = 0) -> None:
        """Waits while the queue holds MAX_QUEUED_WRITES writes, or holds writes and a
        write of size bytes would take it past MAX_QUEUED_BYTES (or until it refuses
        more). Callers are let in in the order they came."""
        if self.refusing or (not self._waiting and self._fits(size)):
            return
        await self._turn(size)

    async def enter(
        self, write: Awaitable[Any], size: int, closed: Callable[[], bool]
    ) -> asyncio.Future[Any]:
        """Queues write, of a request of size bytes, once there is room for it (`room`);
        its future. Once the queue refuses writes, or closed() says the client's channel
        is, write is closed unrun and ClientClosedError raised."""
        try:
            await self.room(size)
        except BaseException:  # cancelled while it waited (Ctrl-C in a sync caller)
            _never_run(write)
            raise
        if self.refusing or closed():
            _never_run(write)
            self._let_in()  # the place it was let in to is the next caller's
            raise ClientClosedError("this cairn client is closed; make a new one")
        return self.put(write, size)

    def _fits(self, size: int) -> bool:
        """Whether a write of size bytes fits beside those queued and promised."""
        writes = len(self._writes) + self._promised
        held = self._bytes + self._promised_bytes
        return writes < MAX_QUEUED_WRITES and (writes == 0 or held + size <= MAX_QUEUED_BYTES)

    async def _turn(self, size: int) -> None:
        """Waits in line until `_let_in` wakes this caller (or `refuse`), its place
        kept for it until it runs (`put` follows at once, in `enter`)."""
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        entry = (waiter, size)
        self._waiting.append(entry)
        try:
            promised = await waiter
        except asyncio.CancelledError:
            # Its place goes to the next in line: a wake lost would leave them waiting.
            if not waiter.cancelled():  # cancelled once woken
                self._unpromise(size, waiter.result())
            elif entry in self._waiting:
                self._waiting.remove(entry)
            self._let_in()
            raise
        self._unpromise(size, promised)

    def _unpromise(self, size: int, promised: bool) -> None:
        if promised:
            self._promised -= 1
            self._promised_bytes -= size

    def _let_in(self) -> None:
        """Wakes the callers first in line, as many as now fit (a write that gave back
        many bytes may let several small ones in), keeping their places for them."""
        while self._waiting:
            waiter, size = self._waiting[0]
            if waiter.cancelled():  # its caller leaves the line by itself
                self._waiting.popleft()
                continue
            if not self._fits(size):
                return
            self._waiting.popleft()
            self._promised += 1
            self._promised_bytes += size
            waiter.set_result(True)

    def put(self, write: Awaitable[Any], size: int = 0) -> asyncio.Future[Any]:
        """Queues write, of a request of size bytes; its future."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._writes.append((write, future, size))
        self._bytes += size
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._work())
            self._worker.add_done_callback(self._stopped)
        return future

    async def _work(self) -> None:
        while self._writes:
            write, future = self._take()
            self._sending = future
            try:
                result = await write
            except Exception as error:  # kept for the caller, counted for flush
                self._failed(future, error)
                if _unanswered(error):
                    self._fail_rest(error)
            else:
                if not future.done():  # a future its caller cancelled takes no result
                    future.set_result(result)

    def _failed(self, future: asyncio.Future[Any], error: BaseException) -> None:
        """future's write failed with error: its `wait()` raises it, a flush reports it.
        Read at once (no asyncio warning for a caller that dropped it unwaited): the
        queue keeps no future, and reads none later."""
        if future.done():  # its caller cancelled it: only a flush reports the error
            self.failures.add(error)
            return
        future.set_exception(error)
        future.exception()
        self.failures.add(error, future)

    def _take(self) -> tuple[Awaitable[Any], asyncio.Future[Any]]:
        """The next write out of the queue, its bytes given back and its place given to
        the next caller in line."""
        write, future, size = self._writes.popleft()
        self._bytes -= size
        self._let_in()
        return write, future

    def _fail_rest(self, error: CairnError) -> None:
        """No server answered a write (after the client's resends): the writes queued
        behind it fail at once, each with an error of the same kind. Sent in turn, each
        waited as long: 6 writes kept close() 12 s at a 2 s deadline, 100 would keep it
        50 minutes at the 30 s default. Writes queued later are sent."""
        for future in self._unqueue():
            self._failed(
                future,
                type(error)(f"not sent: a write queued before it met {error}", code=error.code),
            )

    def _stopped(self, worker: asyncio.Task[None]) -> None:
        """A cancelled worker leaves the write it was sending and those queued unsent;
        says how many. A done callback, not an `except` in `_work`: asyncio.run cancels
        every task left as it ends, the worker often before its first step, when no
        line of it runs."""
        if not worker.cancelled():
            return
        unsent = 0
        if self._sending is not None and not self._sending.done():
            self._not_sent(self._sending, "given up while it was sent: it may have been stored")
            unsent = 1
        if worker is self._worker:  # else a worker started since sends the rest
            unsent += self._abandon()
        if unsent and not self._ending:
            _log.warning(
                "%d writes queued with synchronous=False were not sent: %s",
                unsent,
                _CLOSE_CUT_SHORT if self.refusing else _LOOP_ENDED,
            )

    def _abandon(self) -> int:
        """The writes not yet sent never will be; how many there were."""
        unsent = self._unqueue()
        for future in unsent:
            self._not_sent(future, "not sent: its client closed, or its event loop ended")
        return len(unsent)

    def _not_sent(self, future: asyncio.Future[Any], why: str) -> None:
        """future's write is given up: it fails ClientClosedError, which its `wait()`
        and a flush (of a close still waiting) raise; cancelled, it read as sent, and a
        close cut short by another let the patient one return as if all were stored.
        Read here: one warning says how many, not an asyncio traceback apiece."""
        if future.done():
            return
        error = ClientClosedError(why)
        if self._ending:  # `end` reports what it gives up itself
            future.set_exception(error)
            future.exception()
        else:
            self._failed(future, error)

    def _unqueue(self) -> list[asyncio.Future[Any]]:
        """Takes the writes not yet sent out of the queue, never to be sent; their
        futures."""
        futures = []
        while self._writes:
            write, future = self._take()
            _never_run(write)
            futures.append(future)
        return futures

    def give_up(self) -> None:
        """Stops sending, for a client whose close ended before its flush did (a timeout,
        Ctrl-C): the worker's end logs one warning with the number of writes not sent
        (`_stopped`). Sent on, each failed ClientClosedError on the closed channel, an
        asyncio traceback apiece for an error no caller would ever take (271,637 of them
        from one close cut short). The errors of writes that failed before were read
        as they failed (`_failed`)."""
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()

    async def flush(self) -> None:
        """Waits until the writes queued now are sent; raises the first error since the
        last flush. Not those queued meanwhile, as MLflow's flush drains what is there:
        a thread logging on faster than the writes were sent kept it waiting for ever."""
        await self._sent_or_stuck(None)
        error = self._take_errors()
        if error is not None:
            raise error

    async def end(self, patience: float, final: bool = True) -> None:
        """Sends what is queued for a client nobody will close (its process exits, or
        nothing refers to it any more), and logs a warning with the number of writes
        not stored and the first error: no caller is left to raise it to. Gives up on
        the rest once one write has gone unanswered for patience seconds. Not final
        (threads of the process may still queue writes): only waits for what is queued
        now to be sent, or for one write unanswered that long, giving up nothing."""
        if not final:
            await self._sent_or_stuck(patience)
            return
        self._ending = True
        try:
            unsent, cut = await self._send_while_answered(patience)
        finally:
            self._ending = False
        failed = self.failures.count
        error = self._take_errors()
        if unsent or failed:
            _log.warning(
                "%d writes queued with synchronous=False were not stored before their "
                "client, never closed, ended%s%s",
                unsent + failed,
                " (the one given up while it was sent may have been)" if cut else "",
                f"; the first error: {error}" if error is not None else "",
            )

    async def _send_while_answered(self, patience: float) -> tuple[int, bool]:
        """Sends the writes queued now, until one has been sent for patience seconds
        unanswered; then how many writes were given up (those left, and those queued
        meanwhile: a thread logging on would make the wait endless, and the exit with
        it), and whether one of them was given up while it was sent: the server may
        have stored that one, and the warning counted it as lost."""
        await self._sent_or_stuck(patience)
        worker = self._worker
        if worker is None or worker.done():
            return 0, False
        cut = self._sending is not None and not self._sending.done()
        unsent = len(self._writes) + cut
        worker.cancel()
        await asyncio.wait([worker])
        return unsent, cut

    async def _sent_or_stuck(self, patience: float | None) -> None:
        """Waits until the writes queued now are sent, or (given patience) one has been
        sent for patience seconds unanswered. Cancelled, it leaves them to be sent."""
        last = self._writes[-1][1] if self._writes else self._sending
        worker = self._worker
        while worker is not None and not worker.done() and last is not None and not last.done():
            sending = self._sending
            awaited: list[asyncio.Future[Any]] = [worker, last]
            await asyncio.wait(awaited, timeout=patience, return_when=asyncio.FIRST_COMPLETED)
            if not (last.done() or worker.done()) and self._sending is sending:
                return

    def _take_errors(self) -> BaseException | None:
        """The error a flush raises of the writes failed since last taken: the first,
        noting how many more failed (`_Failures.take`)."""
        return self.failures.take()


_LOOP_ENDED = (
    "their event loop cancelled them (await the client's close() or "
    "flush_async_logging() before the loop ends)"
)
_CLOSE_CUT_SHORT = "the client's close() ended before they were (cancelled, or Ctrl-C)"


def _unanswered(error: Exception) -> TypeGuard[CairnError]:
    """Whether a write failed for want of any server's answer (its deadline passed, or
    no connection): one the server answered UNAVAILABLE carries its reason
    (DATABASE_BUSY, OBJECT_STORE_UNAVAILABLE) and says nothing of the writes after it."""
    return isinstance(error, DeadlineExceededError | UnavailableError) and error.reason is None


def _never_run(write: Awaitable[Any]) -> None:
    if asyncio.iscoroutine(write):
        write.close()  # no "never awaited" warning


def write_queue(transport: Transport) -> _WriteQueue:
    """The queue of the writes the clients of transport's channel make with
    synchronous=False, which closing any of them waits for."""
    queue: _WriteQueue = transport.shared.setdefault("background_writes", _WriteQueue())
    return queue


async def end_background_writes(transport: Transport, final: bool = True) -> None:
    """Sends the writes the clients of transport's channel queued with
    synchronous=False, for a client nobody will close (the sync facade's, at the exit
    or dropped): see `_WriteQueue.end`, waiting for an answer as long as the client's
    deadline (DEFAULT_TIMEOUT when it has none)."""
    queue: _WriteQueue | None = transport.shared.get("background_writes")
    if queue is not None:
        await queue.end(transport.timeout or DEFAULT_TIMEOUT, final)


class BackgroundWrites:
    """Mixed into TrackingClient: sends writes with synchronous=False in the background,
    in order, so `flush_async_logging` (and `close`) can wait for all of them: those of
    every project's client on the channel, which closing any of them closes."""

    _transport: Transport

    def _write_queue(self) -> _WriteQueue:
        return write_queue(self._transport)

    async def _write(
        self, write: Awaitable[Any], synchronous: bool | None, size: Callable[[], int]
    ) -> RunOperations | None:
        """Awaits write, or with synchronous=False queues it and returns at once, once
        the queue has room for it: size() is the bytes its request holds while queued,
        asked for synchronous=False only (a message's ByteSize serializes it, as sending
        it does again)."""
        if synchronous is not False:
            await write
            return None
        queue = self._write_queue()
        future = await queue.enter(write, size(), self._channel_closed)
        return RunOperations([future], queue.failures)

    def _channel_closed(self) -> bool:
        return bool(getattr(self._transport.channel, "closed", False))

    async def flush_async_logging(self) -> None:
        """Waits for the writes started with synchronous=False before it was called
        (MLflow's `mlflow.flush_async_logging`), not for those started meanwhile.

        Raises:
            CairnError: the first error a background write met that neither an earlier
                flush nor its RunOperations' wait() raised, with a note of how many more
                failed (their errors are not kept).
        """
        await self._write_queue().flush()
