"""An ActiveRun's sending: points buffered by `log_metric`, sent as batches by a background task."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..types._tracking import Metric, Param, RunTag
from .run_batches import Batches
from .run_retries import retrying


class BatchWriter(Protocol):
    """The part of TrackingClient an ActiveRun's sends and journals use."""

    @property
    def project(self) -> str: ...

    async def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Sequence[Param] = (),
        tags: Sequence[RunTag] = (),
        *,
        request_id: str | None = None,
    ) -> object: ...


class RunSending:
    """Mixed into ActiveRun: its buffer, and the task that sends it. Its state is
    declared only (ActiveRun sets it), so the methods need no annotated `self`."""

    _client: BatchWriter
    _batches: Batches
    _max_buffered: int
    _send_interval: float
    _wake: asyncio.Event
    _buffered: asyncio.Event
    _room: asyncio.Condition
    _sending: asyncio.Task[None] | None
    _sender_stopped: bool
    _error: BaseException | None
    _ending: bool
    _over: bool
    _journaling: asyncio.Future[Path | None] | None
    _journaled_through: str | None

    if TYPE_CHECKING:

        @property
        def run_id(self) -> str: ...

        async def end_left_open(self, as_what: str = ...) -> None: ...

        async def _journal_meanwhile(self) -> None: ...

        async def _forget_journal(self) -> None: ...

    async def _buffer(self, points: list[Metric]) -> None:
        for point in points:
            self._check_open()
            if self._batches.points >= self._max_buffered:
                async with self._room:
                    await self._room.wait_for(
                        lambda: (
                            self._batches.points < self._max_buffered
                            or self._error is not None
                            or self._over
                        )
                    )
                self._check_open()
            self._buffered.set()
            if self._batches.add(point):
                self._wake.set()

    async def _drain(self) -> None:
        while self._batches.points and self._error is None and not self._over:
            self._wake.set()
            async with self._room:
                await self._room.wait_for(
                    lambda: not self._batches.points or self._error is not None or self._over
                )

    async def _send_forever(self) -> None:
        try:
            await self._send_as_buffered()
            # Stopped by an error retrying cannot fix, which the next call raises. It
            # waits for the run's end all the same: a block never left has none, but
            # its loop's closing, and the journal of what the error left unsent.
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            if not self._sender_stopped:  # by its loop closing, not by the run's end
                await self._end_as_the_loop_closes()
            raise

    async def _end_as_the_loop_closes(self) -> None:
        """The run's end as its event loop closes, cancelling every task (asyncio.run
        returning): that of its block, cancelled with this task, or its own when the
        block was never left. A block's end would wait out flush_timeout for a sender
        that is gone, and a block never left would see its points dropped with the
        loop. The loop runs until this task ends, so a new sender sends them."""
        self._sending = asyncio.create_task(
            self._send_as_buffered(), name=f"cairn-run-{self.run_id}-end"
        )
        # A block cancelled with this task begins its end first (its cancellation was
        # scheduled with this one's): the run ends KILLED, as a cancelled block does.
        await asyncio.sleep(0)
        await self.end_left_open("its event loop closed")

    async def _send_as_buffered(self) -> None:
        while True:
            # With nothing buffered there is nothing to time: a run idle with a tiny
            # send_interval spun a core waking for nothing.
            await self._buffered.wait()
            with contextlib.suppress(TimeoutError):  # what is buffered goes anyway
                async with asyncio.timeout(self._send_interval):
                    await self._wake.wait()
            self._wake.clear()
            while (batch := self._batches.next()) is not None:
                request_id, metrics = batch
                send = functools.partial(
                    self._client.log_batch, self.run_id, metrics=metrics, request_id=request_id
                )
                try:
                    await retrying(send, self._journal_meanwhile)
                except Exception as error:  # Handed to the caller on its next call.
                    self._error = error
                    async with self._room:
                        self._room.notify_all()
                    return
                self._batches.stored()
                if request_id == self._journaled_through:  # all the journal holds is stored
                    self._journaled_through = None
                    await self._forget_journal()
                async with self._room:
                    self._room.notify_all()
            self._buffered.clear()  # all is sent: no await since `next` found nothing

    async def _stop_sending(self) -> None:
        self._sender_stopped = True
        if self._sending is not None:
            self._sending.cancel()
            await asyncio.gather(self._sending, return_exceptions=True)
        if self._journaling is not None:  # before the run's last journal replaces it
            await asyncio.gather(self._journaling, return_exceptions=True)

    def _check_open(self) -> None:
        """Raises the error that stopped sending, if one did, or RuntimeError once the
        run's block has ended or is ending."""
        if self._error is not None:
            raise again(self._error)
        if self._ending:
            raise RuntimeError(
                f"the block of run {self.run_id} has ended: log to the run with the "
                "client's calls (log_metric, log_batch) instead"
            )


def again(error: BaseException) -> BaseException:
    """The error that stopped a run's sends, to raise again: a copy, caused by it. The
    error raised itself took the frames of every caller it went through (a sync
    client's runner among them), and the run keeps it: a client dropped after its
    run's error was caught was never collected, nor its thread and connections."""
    try:
        copied = copy.copy(error)
    except Exception:  # an error that cannot be made again is raised itself
        return error
    copied.__cause__ = error
    return copied
