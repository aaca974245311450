"""The runner: a sync client's loop on a daemon thread, and the way to wait for work on it."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import inspect
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from .._workers import Workers
from ..exceptions import ClientClosedError
from .loop import CLOSE_WAIT_SECONDS, Gate, end_other_tasks, run_until_stopped, stop, task_ended
from .queued import Queued, dropped_sending, ended_left_open, stop_dropped

T = TypeVar("T")
_CLOSED = "this cairn client is closed; make a new one"
_CLOSED_WHILE_RUNNING = "this cairn client was closed while the call ran"


class Runner:
    """A private event loop on a daemon thread, and the way to wait for work on it."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        # The blocking steps of its calls (reading and hashing an upload's file) run on
        # workers of its own: the loop's own pool stops taking work when the main thread
        # ends, and a thread that outlives it may still use the client.
        self._loop.set_default_executor(Workers(thread_name_prefix="cairn-sync-worker"))
        # Closed once, before the loop stops: no work is handed to a loop that will not
        # run it.
        self._gate = Gate()
        self._thread = threading.Thread(
            target=run_until_stopped,
            args=(self._loop, self._gate),
            name="cairn-sync",
            daemon=True,
        )
        self._thread.start()
        # A forked child has the loop but not the thread that runs it: work handed to
        # it there would wait for ever.
        self._pid = os.getpid()
        # What the client queued with synchronous=False, sent when it is left unclosed.
        self.queued = Queued()
        # The runs whose `with` block was entered and not left: the exit, or the
        # runner's drop, ends them (a daemon thread's, one entered by hand), or what
        # they buffered was lost.
        self.open_runs = self.queued.open_runs
        # Dropped unclosed (no client or object of its own left to use it), the loop
        # sends the queued writes, then stops and its thread ends: they were kept, with
        # the loop's files and the channel's connections, until the process exited. Not
        # at the exit itself (_send_queued_at_exit): clients still in use then (by
        # atexit handlers, say) go on working.
        self._dropped = weakref.finalize(
            self, stop_dropped, self._loop, self._pid, self._gate, self.queued
        )
        self._dropped.atexit = False
        runners.add(self)
        # The calls handed to the loop and not answered yet.
        self._running: set[concurrent.futures.Future[Any]] = set()
        # Streams' ends scheduled on the loop from its own thread (`end`).
        self._ending: set[asyncio.Future[None]] = set()

    @property
    def on_its_loop(self) -> bool:
        """Whether the caller runs on the loop's own thread (a progress callable)."""
        return threading.current_thread() is self._thread

    @property
    def forked(self) -> bool:
        """Whether the caller's process is a child forked from the one that made it."""
        return os.getpid() != self._pid

    def wait(self, awaitable: Awaitable[T]) -> T:
        if self.on_its_loop:
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # never to run: no "never awaited" warning
            raise from_its_loop()

        task: list[asyncio.Task[Any]] = []  # the call's, once it runs

        async def awaited() -> T:
            task.append(asyncio.current_task())  # type: ignore[arg-type]
            return await awaitable

        running = self._hand_over(awaited())
        if running is None:
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # never to run: no "never awaited" warning
            raise self._refusal() or ClientClosedError(_CLOSED)
        try:
            return running.result()
        except concurrent.futures.CancelledError:
            raise ClientClosedError(_CLOSED_WHILE_RUNNING) from None
        except BaseException:
            if not running.done():  # the wait itself was interrupted (Ctrl-C)
                self._stop(running, task)
            raise
        finally:
            self._running.discard(running)

    def _stop(self, running: concurrent.futures.Future[Any], task: list[asyncio.Task[Any]]) -> None:
        """Cancels a call its caller stopped waiting for (Ctrl-C) and waits, a bounded
        time, for it to end: left running on the loop, a run's start would go on (log
        its inputs, begin sending) and its end would go on flushing, with no one left to
        end the run; cancelled, they keep the run's end, KILLED, in its journal."""
        running.cancel()  # the loop cancels the call's task in turn
        ended = self._hand_over(task_ended(task))
        if ended is not None:
            with contextlib.suppress(concurrent.futures.TimeoutError):
                ended.result(CLOSE_WAIT_SECONDS)

    def close(self) -> None:
        """Ends the calls still running (their callers get ClientClosedError), stops the
        loop and its thread; again, or in a forked child, does nothing."""
        if self.forked:
            return
        if not self._gate.close():
            return
        self._dropped.detach()
        asyncio.run_coroutine_threadsafe(end_other_tasks(), self._loop).result()
        stop(self._loop, self._gate)
        self._thread.join()  # which closes the loop
        # A call whose task outlived the wait for it to end will never be answered by
        # the loop: its caller gets the error instead of waiting for ever.
        for running in list(self._running):
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                running.set_exception(ClientClosedError(_CLOSED_WHILE_RUNNING))

    @property
    def closed(self) -> bool:
        return self._refusal() is not None

    def send_queued(self, final: bool) -> concurrent.futures.Future[None] | None:
        """Starts sending the writes queued with synchronous=False (`_WriteQueue.end`),
        the loop running on after; None once closed, or in a forked child."""
        return self._hand_over(self.queued.send(final))

    def end_open_runs(self) -> concurrent.futures.Future[None] | None:
        """Starts ending the runs whose block is still open (`ActiveRun.end_left_open`);
        None once closed, or in a forked child."""
        return self._hand_over(ended_left_open(list(self.open_runs)))

    def _hand_over(self, work: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T] | None:
        """work, running on the loop; None when the loop takes no more work."""
        # The process first, without the lock: a forked child may have a copy of the lock
        # that another thread of its parent held at the fork, and no such thread.
        if self.forked:
            work.close()
            return None
        with self._gate.lock:
            if self._gate.closed:
                work.close()
                return None
            running = asyncio.run_coroutine_threadsafe(work, self._loop)
            self._running.add(running)
            return running

    def _refusal(self) -> ClientClosedError | None:
        """Why no more work may be handed to the loop, if so."""
        if self.forked:
            return ClientClosedError(
                "a sync cairn client cannot be used in a process forked from the one that "
                "made it; make a new client in this process"
            )
        return ClientClosedError(_CLOSED) if self._gate.closed else None

    def end(self, closing: Callable[[], Awaitable[None]]) -> None:
        """Ends a stream left unread: waited for, but on the loop's own thread (the
        collector runs wherever memory is taken), where it is scheduled instead."""
        if not self.on_its_loop:
            with contextlib.suppress(ClientClosedError):  # it ended with its loop
                self.wait(closing())
            return
        if not self._loop.is_running():  # collected as the loop closes: none would run it
            return
        ending = asyncio.ensure_future(closing(), loop=self._loop)
        self._ending.add(ending)  # held: the loop keeps a task only weakly
        ending.add_done_callback(self._ending.discard)


def from_its_loop() -> RuntimeError:
    return RuntimeError("a sync cairn client cannot be called from its own loop")


# The runners alive: the exit waits for them, and for the loops of dropped ones still
# sending their queued writes (`queued.dropped_sending`).
runners: weakref.WeakSet[Runner] = weakref.WeakSet()


def _send_queued_at_exit(final: bool) -> None:
    """Sends the writes the sync clients left unclosed queued with synchronous=False,
    as MLflow flushes its async logging queue at the exit: the exit ended their daemon
    loop threads with whatever they still held (1 to 12 points of 200 stored). The
    loops run on, for exit handlers that use a client after this one. Only the final
    call gives up on writes (those a thread logging on queues meanwhile)."""
    sending = [runner.send_queued(final) for runner in list(runners)]
    if final:  # the threads that are not daemons have left their blocks by now
        sending += [runner.end_open_runs() for runner in list(runners)]
    concurrent.futures.wait([s for s in sending if s is not None] + list(dropped_sending))


# When the main thread ends, among threading's exit calls (which run before atexit's):
# threads that are not daemons still run then, and may queue more, so nothing is given
# up yet. Then for good among atexit's, once those threads ended, for what they and the
# exit handlers registered since queue (the last registered runs first).
getattr(threading, "_register_atexit", atexit.register)(
    functools.partial(_send_queued_at_exit, final=False)
)
atexit.register(_send_queued_at_exit, final=True)
