"""Worker threads that the end of the main thread does not stop: the sync facade's loops
run their blocking steps (an upload reading and hashing its file, `asyncio.to_thread`)
on them, and a direct transfer its sending and hashing.

A loop's own default executor is a ThreadPoolExecutor, and concurrent.futures stops
every one of those when the main thread ends (an exit hook of threading's, run before
the threads that are not daemons are joined): from then on each refuses work ("cannot
schedule new futures after interpreter shutdown") and its idle threads end. A thread
that outlives the main one, as docs/client.md allows, then stored no image of
log_image(synchronous=False), and its log_artifact raised RuntimeError.
"""

from __future__ import annotations

import asyncio
import functools
import os
import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
# As many as a ThreadPoolExecutor made without a number starts at most.
DEFAULT_WORKERS = min(32, (os.cpu_count() or 1) + 4)

_Task = tuple[Future[Any], Callable[[], Any]]


class Workers(ThreadPoolExecutor):
    """Runs what is submitted on daemon threads of its own, at most max_workers, each
    started when work finds no idle one, all ended by shutdown.

    A ThreadPoolExecutor only because `loop.set_default_executor` takes nothing else
    (Python 3.11 raises TypeError): its submit and shutdown are replaced, and the state
    the base class keeps for its own threads (and that the exit hook stops) stays unused.
    Daemon threads, as the loop's own: an idle one must not hold the process open.
    """

    def __init__(self, max_workers: int = DEFAULT_WORKERS, thread_name_prefix: str = "") -> None:
        super().__init__(max_workers, thread_name_prefix)
        self._most = max_workers
        self._prefix = thread_name_prefix or "cairn-worker"
        self._tasks: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        # Released by a worker each time it is done with a task: submit hands its task
        # to such a worker rather than start another.
        self._idle = threading.Semaphore(0)
        self._started: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopped = False
        # Dropped without shutdown, its workers end all the same, as a ThreadPoolExecutor's
        # do; not at the exit, where a loop still running may need them.
        weakref.finalize(self, self._tasks.put, None).atexit = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._stopped:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._tasks.put((future, functools.partial(fn, *args, **kwargs)))
            if not self._idle.acquire(blocking=False) and len(self._started) < self._most:
                self._start_worker()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._stopped = True
            started = list(self._started)
        if cancel_futures:
            while (task := _next_waiting(self._tasks)) is not None:
                task[0].cancel()
        self._tasks.put(None)  # each worker that sees it puts it back for the next
        super().shutdown(wait=False)
        if wait:
            for worker in started:
                worker.join()

    def _start_worker(self) -> None:
        # The worker holds the queue and the semaphore, not the executor: no cycle.
        worker = threading.Thread(
            target=_serve,
            args=(self._tasks, self._idle),
            name=f"{self._prefix}_{len(self._started)}",
            daemon=True,
        )
        worker.start()
        self._started.append(worker)


async def ended(work: asyncio.Future[Any]) -> None:
    """Returns once work, a thread's (`asyncio.to_thread`), has ended, its error retrieved
    and left (the error that ends its caller is the one raised). A thread cannot be
    cancelled: awaited bare, a cancelled caller's future is cancelled while the thread
    goes on, reading or writing a file its caller then closes, or the file that takes
    its descriptor next. In the body of the caller, `await asyncio.shield(work)` leaves
    it to this. A cancel that comes meanwhile (a second one: the sync facade's Ctrl-C,
    then its close) is raised once work has ended."""
    cancelled: asyncio.CancelledError | None = None
    while not work.done():
        try:
            await asyncio.wait({work})
        except asyncio.CancelledError as error:
            cancelled = error
    if not work.cancelled():
        work.exception()
    if cancelled is not None:
        raise cancelled


def _serve(tasks: queue.SimpleQueue[_Task | None], idle: threading.Semaphore) -> None:
    while (task := tasks.get()) is not None:
        _run(*task)
        del task  # its arguments and result are not kept while the worker waits
        idle.release()
    tasks.put(None)


def _run(future: Future[Any], call: Callable[[], Any]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = call()
    except BaseException as error:
        future.set_exception(error)
        # The error's traceback holds this frame: without the future, no cycle.
        del future
    else:
        future.set_result(result)


def _next_waiting(tasks: queue.SimpleQueue[_Task | None]) -> _Task | None:
    try:
        return tasks.get_nowait()
    except queue.Empty:
        return None
