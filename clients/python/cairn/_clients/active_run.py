"""`ActiveRun`: a run for `async with`, whose metrics are sent in batches meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Protocol

from ..types._tracking import Metric, Param, Run, RunStatus, RunTag


class _RunWriter(Protocol):
    """The part of TrackingClient an ActiveRun uses."""

    async def create_run(
        self, experiment_id: str, *, tags: dict[str, Any] | None, run_name: str | None
    ) -> Run: ...

    async def set_terminated(self, run_id: str, status: RunStatus) -> None: ...

    async def log_param(self, run_id: str, key: str, value: Any) -> Any: ...

    async def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Sequence[Param] = (),
        tags: Sequence[RunTag] = (),
    ) -> None: ...


class ActiveRun:
    """A run being logged to, made by `TrackingClient.start_run`.

    `log_metric` only appends to a buffer; a background task sends the buffer as
    `log_batch` calls of up to `batch_size` points. When `max_buffered` points wait,
    `log_metric` waits too, so a fast loop cannot outrun the server without bound.
    An error of a background send is raised by the next `log_metric`, `flush` or the
    end of the block. Leaving the block flushes, then ends the run.
    """

    def __init__(
        self,
        client: _RunWriter,
        experiment_id: str,
        *,
        run_name: str | None,
        tags: dict[str, Any] | None,
        batch_size: int,
        max_buffered: int,
    ) -> None:
        if batch_size < 1 or max_buffered < batch_size:
            raise ValueError("need 1 <= batch_size <= max_buffered")
        self._client = client
        self._experiment_id, self._run_name, self._tags = experiment_id, run_name, tags
        self._batch_size = batch_size
        self._max_buffered = max_buffered
        self._buffer: list[Metric] = []
        self._wake = asyncio.Event()
        self._room = asyncio.Condition()
        self._sending: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self.run: Run | None = None

    @property
    def run_id(self) -> str:
        if self.run is None:
            raise RuntimeError("the run starts when the 'async with' block is entered")
        return self.run.info.run_id

    async def __aenter__(self) -> ActiveRun:
        self.run = await self._client.create_run(
            self._experiment_id, tags=self._tags, run_name=self._run_name
        )
        self._sending = asyncio.create_task(self._send_forever(), name=f"cairn-run-{self.run_id}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._stop_sending()
        finally:
            if exc_type is None and self._error is None:
                status = RunStatus.FINISHED
            elif exc_type is not None and issubclass(
                exc_type, asyncio.CancelledError | KeyboardInterrupt
            ):
                status = RunStatus.KILLED
            else:
                status = RunStatus.FAILED
            await self._client.set_terminated(self.run_id, status)
        if self._error is not None and exc_type is None:
            raise self._error

    async def log_metric(
        self, key: str, value: float, step: int = 0, timestamp: int | None = None
    ) -> None:
        """Buffers one point; waits only while the buffer is full."""
        self._raise_pending()
        if len(self._buffer) >= self._max_buffered:
            async with self._room:
                await self._room.wait_for(
                    lambda: len(self._buffer) < self._max_buffered or self._error is not None
                )
            self._raise_pending()
        self._buffer.append(
            Metric(key, float(value), timestamp or time.time_ns() // 1_000_000, step)
        )
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    async def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        for key, value in metrics.items():
            await self.log_metric(key, value, step)

    async def log_param(self, key: str, value: Any) -> Any:
        """Sent at once, so a conflicting value fails here."""
        return await self._client.log_param(self.run_id, key, value)

    async def log_params(self, params: dict[str, Any]) -> None:
        await self._client.log_batch(
            self.run_id, params=[Param(k, str(v)) for k, v in params.items()]
        )

    async def set_tag(self, key: str, value: Any) -> None:
        await self._client.log_batch(self.run_id, tags=[RunTag(key, str(value))])

    async def flush(self) -> None:
        """Returns once every buffered point has been stored."""
        while self._buffer and self._error is None:
            self._wake.set()
            async with self._room:
                await self._room.wait_for(lambda: not self._buffer or self._error is not None)
        self._raise_pending()

    async def _send_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._buffer:
                batch = self._buffer[: self._batch_size]
                try:
                    await self._client.log_batch(self.run_id, metrics=batch)
                except Exception as error:  # Handed to the caller on its next call.
                    self._error = error
                    async with self._room:
                        self._room.notify_all()
                    return
                del self._buffer[: len(batch)]
                async with self._room:
                    self._room.notify_all()

    async def _stop_sending(self) -> None:
        if self._sending is None:
            return
        try:
            await self.flush()
        finally:
            self._sending.cancel()
            await asyncio.gather(self._sending, return_exceptions=True)

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise self._error
