"""The threads the artifact service's blocking backend calls run on (the minio SDK and
file I/O block), apart from the event loop's default executor.

A thread cannot be stopped: a call whose deadline passes leaves its backend call
running to its end. A store that stops answering holds each call that meets it until
the store's timeout (CAIRN_S3_TIMEOUT_SECONDS). In the default executor (CPUs + 4
threads, at most 32), which every service of the process shares and a stopping server
waits for, a handful of such calls held every thread, and the calls after the store
came back queued behind them. Here they cost only the artifact service's own backend
calls, and only until their timeout.

Nor does the process wait for them when it exits: a ThreadPoolExecutor's threads are
joined at exit, which kept a stopped server alive until the store's timeout (60 s by
default, twice Kubernetes' grace period). Their threads here are daemon threads, and a
call that nobody waits for any more ends with the process; an upload's writer cut so
is left unpublished, as after a crash, and the janitor removes its bytes.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

# Backend calls: a download's reads, copies, deletes, the janitor's listings, the
# read-back of a completion. Each holds its thread for one request to the store.
STORE_THREADS = 32
# An upload's writer holds its thread for the whole upload, waiting on its client for
# every chunk: in a pool of their own, slow uploads never hold the threads above.
# Past this many at once, uploads wait for a thread.
UPLOAD_THREADS = 64

_P = ParamSpec("_P")
_T = TypeVar("_T")


class _DaemonThreads(Executor):
    """Up to `size` daemon threads, started as work comes and none is idle, that run
    submitted calls in order."""

    def __init__(self, size: int, name: str) -> None:
        self._size, self._name = size, name
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._started = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        future: Future[_T] = Future()
        self._work.put((future, functools.partial(fn, *args, **kwargs)))
        if not self._idle.acquire(blocking=False):
            self._start_thread()
        return future

    def _start_thread(self) -> None:
        with self._lock:
            if self._started == self._size:
                return  # the call waits for a thread
            self._started += 1
            name = f"{self._name}_{self._started}"
            threading.Thread(target=self._serve, name=name, daemon=True).start()

    def _serve(self) -> None:
        while True:
            future, call = self._work.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as error:
                    future.set_exception(error)
                del future, call  # holds no result past its call
            self._idle.release()


_store = _DaemonThreads(STORE_THREADS, "cairn-store")
_uploads = _DaemonThreads(UPLOAD_THREADS, "cairn-upload")


async def in_store(function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """function(*args, **kwargs) on a store thread, in the caller's context (its log
    bindings), as asyncio.to_thread would run it in the default executor."""
    return await start_in_store(function, *args, **kwargs)


def start_in_store(
    function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
) -> asyncio.Future[_T]:
    """Starts function(*args, **kwargs) on a store thread, as `in_store` does; its future
    tells when the thread ends, which a cancelled await of it does not."""
    return _start(_store, function, *args, **kwargs)


def start_upload(
    function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
) -> asyncio.Future[_T]:
    """Starts an upload's writer, function(*args, **kwargs), on an upload thread."""
    return _start(_uploads, function, *args, **kwargs)


def _start(
    pool: Executor, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
) -> asyncio.Future[_T]:
    context = contextvars.copy_context()
    call = functools.partial(context.run, function, *args, **kwargs)
    return asyncio.get_running_loop().run_in_executor(pool, call)
