"""Progress callbacks given through the sync facade, run on a thread of their own, off the loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any

# The callbacks async methods call with each report, by method: a plain function given
# there through the facade runs on a thread of its own, not on the loop, where calling the
# same sync client raised RuntimeError (the loop would wait for itself) and where, if
# slow, it held up every other thread's call of the client.
_CALLBACKS = {"wait_operation": "on_progress"}


def callbacks_off_the_loop(
    method: Callable[..., Any], name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """args and kwargs of a call of method, a callback of it in _CALLBACKS made to run
    off the loop; an async callback, which runs on the loop by design, as it is."""
    parameter = _CALLBACKS.get(name)
    if parameter is None:
        return args, kwargs
    try:
        bound = inspect.signature(method).bind_partial(*args, **kwargs)
    except TypeError:  # the call itself raises it, as the async method's would
        return args, kwargs
    callback = bound.arguments.get(parameter)
    if not callable(callback) or inspect.iscoroutinefunction(callback):
        return args, kwargs
    bound.arguments[parameter] = _on_a_thread_of_its_own(callback)
    return bound.args, bound.kwargs


def _on_a_thread_of_its_own(callback: Callable[..., Any]) -> Callable[..., Awaitable[None]]:
    """callback, awaited by the loop while a thread of its own runs it: not one of a
    pool, whose threads callbacks calling the client (each waiting for a callback of
    its own call) would all hold, waiting for ever."""

    async def off_the_loop(*args: Any) -> None:
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[Any] = loop.create_future()

        def answer(outcome: Callable[[], None]) -> None:
            if not answered.done():  # else the wait it reports on was cancelled
                outcome()

        def run() -> None:
            try:
                outcome = functools.partial(answered.set_result, callback(*args))
            except BaseException as error:  # raised where the callback is awaited
                outcome = functools.partial(answered.set_exception, _callback_failure(error))
            with contextlib.suppress(RuntimeError):  # the client closed meanwhile
                loop.call_soon_threadsafe(answer, outcome)

        threading.Thread(target=run, name="cairn-sync-callback", daemon=True).start()
        reported = await answered
        if inspect.isawaitable(reported):  # a plain function may answer an awaitable
            await reported

    return off_the_loop


def _callback_failure(error: BaseException) -> Exception:
    """What a callback's error raises in the wait it reports to: the error itself, but
    for StopIteration (a next() past the end), which a future cannot hold, so the wait
    never learnt it failed, and SystemExit or KeyboardInterrupt, which ended the
    client's loop and every thread's calls with it."""
    if isinstance(error, Exception) and not isinstance(error, StopIteration):
        return error
    return RuntimeError(f"the progress callback raised {error!r}")
