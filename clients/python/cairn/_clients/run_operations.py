"""MLflow's `synchronous=False`: a write that returns at once and runs in the background."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Iterable
from typing import Any

from .._transport import Transport
from ..exceptions import ClientClosedError


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
        then no longer raises)."""
        await asyncio.gather(*self._futures, return_exceptions=True)
        failed = [f for f in self._futures if not f.cancelled() and f.exception()]
        for future in failed:
            if future in self._unreported:
                self._unreported.remove(future)
        if failed:
            raise failed[0].exception()  # type: ignore[misc]

    def done(self) -> bool:
        return all(future.done() for future in self._futures)


class _WriteQueue:
    """The background writes of one client, sent one at a time in the order they were
    made: two writes to one key (a tag set twice) land as the caller wrote them.

    A failed write is kept until `flush` (or its RunOperations' `wait`) reports it,
    so an error is never lost because the caller did not wait for it.
    """

    def __init__(self) -> None:
        self._writes: deque[tuple[Awaitable[Any], asyncio.Future[Any]]] = deque()
        self._worker: asyncio.Task[None] | None = None
        self.failed: list[asyncio.Future[Any]] = []

    def put(self, write: Awaitable[Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._writes.append((write, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._work())
        return future

    async def _work(self) -> None:
        while self._writes:
            write, future = self._writes.popleft()
            try:
                result = await write
            except asyncio.CancelledError:
                future.cancel()
                self._abandon()
                raise
            except Exception as error:  # kept for the caller and for flush
                future.set_exception(error)
                self.failed.append(future)
            else:
                future.set_result(result)

    def _abandon(self) -> None:
        """The loop is going away: the writes not yet sent never will be."""
        while self._writes:
            write, future = self._writes.popleft()
            if asyncio.iscoroutine(write):
                write.close()
            future.cancel()

    async def flush(self) -> None:
        """Waits until no write is left; raises the first error since the last flush."""
        while self._worker is not None and not self._worker.done():
            await asyncio.shield(self._worker)
        failed = list(self.failed)
        self.failed.clear()
        errors = [future.exception() for future in failed]  # retrieved: no asyncio warning
        if errors:
            raise errors[0]  # type: ignore[misc]


class BackgroundWrites:
    """Mixed into TrackingClient: sends writes with synchronous=False in the background,
    in order, so `flush_async_logging` (and `close`) can wait for all of them: those of
    every project's client on the channel, which closing any of them closes."""

    _transport: Transport

    def _write_queue(self) -> _WriteQueue:
        queue: _WriteQueue = self._transport.shared.setdefault("background_writes", _WriteQueue())
        return queue

    async def _write(self, write: Awaitable[Any], synchronous: bool | None) -> RunOperations | None:
        """Awaits write, or with synchronous=False queues it and returns at once."""
        if synchronous is not False:
            await write
            return None
        if getattr(self._transport.channel, "closed", False):
            if asyncio.iscoroutine(write):
                write.close()  # never to run: no "never awaited" warning
            raise ClientClosedError("this cairn client is closed; make a new one")
        queue = self._write_queue()
        return RunOperations([queue.put(write)], queue.failed)

    async def flush_async_logging(self) -> None:
        """Waits for every write started with synchronous=False (MLflow's
        `mlflow.flush_async_logging`).

        Raises:
            CairnError: the first error a background write met that neither an earlier
                flush nor its RunOperations' wait() raised.
        """
        await self._write_queue().flush()
