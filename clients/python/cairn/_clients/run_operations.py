"""MLflow's `synchronous=False`: a write that returns at once and runs in the background."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any


class RunOperations:
    """Writes started with `synchronous=False` (MLflow's `RunOperations`).

    The writes run on the client's event loop; `wait()` waits for all of them and
    raises the first error one of them met. A write is sent with the same request id
    and retry table as its synchronous form, so waiting changes when, never whether.
    """

    _sync_view = True  # the sync facade hands it out with wait() made sync

    def __init__(self, tasks: Iterable[asyncio.Task[Any]]) -> None:
        self._tasks = list(tasks)

    async def wait(self) -> None:
        """Waits for every write; raises the first error among them."""
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def done(self) -> bool:
        return all(task.done() for task in self._tasks)


class BackgroundWrites:
    """Mixed into TrackingClient: starts writes in the background and remembers them
    until they end, so `flush_async_logging` can wait for all of them."""

    def _pending(self) -> set[asyncio.Task[Any]]:
        pending: set[asyncio.Task[Any]] = self.__dict__.setdefault("_pending_writes", set())
        return pending

    async def _write(self, write: Awaitable[Any], synchronous: bool | None) -> RunOperations | None:
        """Awaits write, or with synchronous=False starts it and returns at once."""
        if synchronous is not False:
            await write
            return None
        task = asyncio.ensure_future(write)
        pending = self._pending()
        pending.add(task)
        task.add_done_callback(pending.discard)
        return RunOperations([task])

    async def flush_async_logging(self) -> None:
        """Waits for every write started with synchronous=False (MLflow's
        `mlflow.flush_async_logging`); raises the first error among them."""
        await RunOperations(list(self._pending())).wait()
