"""MLflow's `synchronous=False`: a write that returns at once and runs in the background."""

from __future__ import annotations

import asyncio
import logging
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
        self, futures: Iterable[asyncio.Future[Any]], unreported: list[Any] | None = None
    ) -> None:
        self._futures = list(futures)
        self._unreported = [] if unreported is None else unreported

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
            if future in self._unreported:
                self._unreported.remove(future)
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


class _WriteQueue:
    """The background writes of one client, sent one at a time in the order they were
    made: two writes to one key (a tag set twice) land as the caller wrote them. It
    holds MAX_QUEUED_WRITES at most (`room`).

    A failed write is kept until `flush` (or its RunOperations' `wait`) reports it,
    so an error is never lost because the caller did not wait for it. Once `refuse`d
    (the client's close began), it takes no more writes.
    """

    def __init__(self) -> None:
        self._writes: deque[tuple[Awaitable[Any], asyncio.Future[Any]]] = deque()
        self._worker: asyncio.Task[None] | None = None
        # The write being sent (or the last one sent).
        self._sending: asyncio.Future[Any] | None = None
        # Set while `end` waits: it reports the writes it gives up on itself.
        self._ending = False
        # Set once the client's close began: a write queued later raises ClientClosedError.
        self.refusing = False
        self.failed: list[asyncio.Future[Any]] = []
        self._taken = asyncio.Event()  # set as writes leave the queue, for `room`

    def refuse(self) -> None:
        """Takes no more writes: the client's close began, and waits only for those
        queued before it (a thread logging on kept it waiting for ever)."""
        self.refusing = True
        self._taken.set()  # those waiting for room are refused too

    async def room(self) -> None:
        """Waits while the queue holds MAX_QUEUED_WRITES writes (or until it refuses
        more)."""
        while len(self._writes) >= MAX_QUEUED_WRITES and not self.refusing:
            self._taken.clear()
            await self._taken.wait()

    def put(self, write: Awaitable[Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._writes.append((write, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._work())
            self._worker.add_done_callback(self._stopped)
        return future

    async def _work(self) -> None:
        while self._writes:
            write, future = self._writes.popleft()
            self._taken.set()
            self._sending = future
            try:
                result = await write
            except Exception as error:  # kept for the caller and for flush
                if future.done():  # its caller cancelled it: flush reports the error
                    future = asyncio.get_running_loop().create_future()
                future.set_exception(error)
                self.failed.append(future)
                if _unanswered(error):
                    self._fail_rest(error)
            else:
                if not future.done():  # a future its caller cancelled takes no result
                    future.set_result(result)

    def _fail_rest(self, error: CairnError) -> None:
        """No server answered a write (after the client's resends): the writes queued
        behind it fail at once, each with an error of the same kind. Sent in turn, each
        waited as long: 6 writes kept close() 12 s at a 2 s deadline, 100 would keep it
        50 minutes at the 30 s default. Writes queued later are sent."""
        if not self._writes:
            return
        error.add_note(
            f"{len(self._writes)} more writes queued with synchronous=False were not sent"
        )
        for future in self._unqueue():
            future.set_exception(
                type(error)(f"not sent: a write queued before it met {error}", code=error.code)
            )
            self.failed.append(future)

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
        future.set_exception(ClientClosedError(why))
        future.exception()
        if not self._ending:  # `end` reports what it gives up itself
            self.failed.append(future)

    def _unqueue(self) -> list[asyncio.Future[Any]]:
        """Takes the writes not yet sent out of the queue, never to be sent; their
        futures."""
        futures = []
        while self._writes:
            write, future = self._writes.popleft()
            _never_run(write)
            futures.append(future)
        self._taken.set()
        return futures

    def give_up(self) -> None:
        """Stops sending, for a client whose close ended before its flush did (a timeout,
        Ctrl-C): the worker's end logs one warning with the number of writes not sent
        (`_stopped`). Sent on, each failed ClientClosedError on the closed channel, an
        asyncio traceback apiece for an error no caller would ever take (271,637 of them
        from one close cut short). The errors of writes that failed before are read
        too (each write's `wait()` still raises its own): no flush is left to read them."""
        for failed in self.failed:
            failed.exception()
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()

    async def flush(self) -> None:
        """Waits until the writes queued now are sent; raises the first error since the
        last flush. Not those queued meanwhile, as MLflow's flush drains what is there:
        a thread logging on faster than the writes were sent kept it waiting for ever."""
        await self._sent_or_stuck(None)
        errors = self._take_errors()
        if errors:
            raise errors[0]

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
        errors = self._take_errors()
        if unsent or errors:
            _log.warning(
                "%d writes queued with synchronous=False were not stored before their "
                "client, never closed, ended%s%s",
                unsent + len(errors),
                " (the one given up while it was sent may have been)" if cut else "",
                f"; the first error: {errors[0]}" if errors else "",
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

    def _take_errors(self) -> list[BaseException]:
        """The errors of the writes failed since last taken (retrieved: no asyncio
        warning)."""
        errors = [future.exception() for future in self.failed]
        self.failed.clear()  # in place: RunOperations hold the list
        return [error for error in errors if error is not None]


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

    async def _write(self, write: Awaitable[Any], synchronous: bool | None) -> RunOperations | None:
        """Awaits write, or with synchronous=False queues it and returns at once."""
        if synchronous is not False:
            await write
            return None
        queue = self._write_queue()
        try:
            await queue.room()
        except BaseException:  # cancelled while it waited (Ctrl-C in a sync caller)
            _never_run(write)
            raise
        if queue.refusing or getattr(self._transport.channel, "closed", False):
            _never_run(write)
            raise ClientClosedError("this cairn client is closed; make a new one")
        return RunOperations([queue.put(write)], queue.failed)

    async def flush_async_logging(self) -> None:
        """Waits for the writes started with synchronous=False before it was called
        (MLflow's `mlflow.flush_async_logging`), not for those started meanwhile.

        Raises:
            CairnError: the first error a background write met that neither an earlier
                flush nor its RunOperations' wait() raised.
        """
        await self._write_queue().flush()
