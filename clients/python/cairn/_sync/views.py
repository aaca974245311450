"""Sync views: async objects, methods, pagers and streams of the async client, made sync."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Set, ValuesView
from types import TracebackType
from typing import Any

from .. import _clients
from .._clients.active_run import ActiveRun
from ..types._paging import Pager
from .callbacks import callbacks_off_the_loop
from .runner import Runner


class SyncView:
    """An object of the async client (such as an ActiveRun), its methods made sync."""

    def __init__(self, target: Any, runner: Runner) -> None:
        self._target = target
        self._runner = runner

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def sync_method(*args: Any, **kwargs: Any) -> Any:
            settled = getattr(self._target, "_off_the_loop", None)
            if settled is not None and (plain := settled(name)) is not None:
                return plain(*args, **kwargs)  # needs no loop: the client may be closed
            args, kwargs = callbacks_off_the_loop(value, name, args, kwargs)
            return call(self._runner, value, *args, **kwargs)

        return sync_method

    def __setattr__(self, name: str, value: Any) -> None:
        # A public attribute is the async object's (`client.direct_threshold = None`
        # must switch direct transfer off); the view's own are private.
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._target, name, value)

    def __enter__(self) -> Any:
        entered = call(self._runner, self._target.__aenter__)
        if isinstance(self._target, ActiveRun):
            self._runner.open_runs.add(self._target)
        return self if entered is self._target else entered

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            return self._runner.wait(self._target.__aexit__(exc_type, exc, tb))
        finally:
            self._runner.open_runs.discard(self._target)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(self._target)) | set(super().__dir__()))


def call(runner: Runner, /, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Calls function on the loop (awaiting what it returns) and adapts the result."""

    # An object this facade handed out goes back to the async client as itself.
    args = tuple(_unwrapped(a) for a in args)
    kwargs = {key: _unwrapped(value) for key, value in kwargs.items()}

    async def on_loop() -> Any:
        result = function(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    return _adapt(runner, runner.wait(on_loop()))


def _adapt(runner: Runner, value: Any) -> Any:
    if isinstance(value, Pager) and inspect.iscoroutinefunction(value.page_fn):
        # A Pager a method made (`list_operations`) pages with the sync call; looked at
        # first, as a Pager is an async iterator too.
        page_fn = value.page_fn
        return Pager(lambda options: call(runner, page_fn, options), value.options)
    if hasattr(value, "__anext__"):
        return _iterate(runner, value)
    if type(value).__module__.startswith(_clients.__name__) and (
        hasattr(value, "__aenter__") or getattr(value, "_sync_view", False)
    ):
        return SyncView(value, runner)
    return value


def _iterate(runner: Runner, stream: AsyncIterator[Any]) -> Iterator[Any]:
    # A stream that can hand over what arrived in one go (ReadAhead) does so: a
    # hand-off between threads costs far more than an item.
    take = getattr(stream, "next_batch", None) or (lambda: _one(stream))
    try:
        while True:
            try:
                yield from runner.wait(take())
            except StopAsyncIteration:
                return
    finally:
        closing = getattr(stream, "aclose", None)
        if closing is not None:
            runner.end(closing)


async def _one(stream: AsyncIterator[Any]) -> list[Any]:
    return [await stream.__anext__()]


def _unwrapped(value: Any) -> Any:
    """value, with the objects this facade handed out (alone, or in a collection or a
    generator of arguments) as the async client's own: the async client uses them on
    the loop, where a facade's object cannot call back into it."""
    if isinstance(value, SyncView):
        return value._target
    if inspect.isgenerator(value):  # read here, once: the loop would read it too late
        value = list(value)
    if isinstance(value, Mapping) and any(isinstance(v, SyncView) for v in value.values()):
        return {key: _unwrapped(v) for key, v in value.items()}
    if isinstance(value, list | tuple | Set | ValuesView) and any(
        isinstance(v, SyncView) for v in value
    ):
        unwrapped = [_unwrapped(v) for v in value]
        return type(value)(unwrapped) if isinstance(value, list | tuple) else unwrapped
    return value
