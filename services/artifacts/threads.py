"""The threads the artifact service's blocking backend calls run on (the minio SDK and
file I/O block), apart from the event loop's default executor.

A thread cannot be stopped: a call whose deadline passes leaves its backend call
running to its end. A store that stops answering holds each call that meets it until
the store's timeout (CAIRN_S3_TIMEOUT_SECONDS). In the default executor (CPUs + 4
threads, at most 32), which every service of the process shares and a stopping server
waits for, a handful of such calls held every thread, and the calls after the store
came back queued behind them. Here they cost only the artifact service's own backend
calls, and only until their timeout.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

# Backend calls: a download's reads, copies, deletes, the janitor's listings, the
# read-back of a completion. Each holds its thread for one request to the store.
STORE_THREADS = 32
# An upload's writer holds its thread for the whole upload, waiting on its client for
# every chunk: in a pool of their own, slow uploads never hold the threads above.
# Past this many at once, uploads wait for a thread.
UPLOAD_THREADS = 64

_P = ParamSpec("_P")
_T = TypeVar("_T")
_store = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="cairn-store")
_uploads = ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="cairn-upload")


async def in_store(function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """function(*args, **kwargs) on a store thread, in the caller's context (its log
    bindings), as asyncio.to_thread would run it in the default executor."""
    return await _start(_store, function, *args, **kwargs)


def start_upload(
    function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
) -> asyncio.Future[_T]:
    """Starts an upload's writer, function(*args, **kwargs), on an upload thread."""
    return _start(_uploads, function, *args, **kwargs)


def _start(
    pool: ThreadPoolExecutor, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
) -> asyncio.Future[_T]:
    context = contextvars.copy_context()
    call = functools.partial(context.run, function, *args, **kwargs)
    return asyncio.get_running_loop().run_in_executor(pool, call)
