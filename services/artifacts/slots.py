"""The slots a transfer waits for: a writer thread (an upload), a download's buffers.

The calls holding the slots keep them to their end, so a call still waiting for one when
the server begins to stop would wait out the whole grace period, and be cut then. It is
told at once instead, UNAVAILABLE (SHUTTING_DOWN), and calls again on a server that stays.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ..common.errors import ResourceExhausted, Unavailable
from .budget import ByteBudget

# Streamed uploads waiting at once for their memory (budget.py) and a writer thread.
# One waits before its verdict, yet gRPC's flow control lets its client send what the
# stream's window holds meanwhile, which grows (BDP probing) on a fast link: 48 such
# uploads, each sending 64 MiB without waiting for its verdict, grew the server by 658
# MiB, about 14 MiB each. So 8 hold at most about 128 MiB, what the 4 GiB limit leaves
# beside the budgets (budget.UPLOAD_BYTES). One more is refused at once, UPLOADS_BUSY,
# which the client waits out with a backoff, as COMPLETIONS_BUSY.
MAX_WAITING_UPLOADS = 8


@contextlib.asynccontextmanager
async def held(slots: asyncio.Semaphore, stopping: asyncio.Event) -> AsyncIterator[None]:
    """One of slots, held for the body (see `taken`)."""
    await taken(slots, stopping)
    try:
        yield
    finally:
        slots.release()


async def taken(slots: asyncio.Semaphore, stopping: asyncio.Event) -> None:
    """Takes one of slots, for the caller to release.

    Raises:
        Unavailable: SHUTTING_DOWN, the server began to stop while the call waited.
    """
    if not slots.locked():  # no wait, and nothing to race: the common case
        await slots.acquire()
        return
    taking = asyncio.ensure_future(slots.acquire())
    stopped = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait((taking, stopped), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # the call was cancelled (its client left) as it waited
        _give_back(taking, slots)
        raise
    finally:
        stopped.cancel()
    if taking.done():  # taken, even if the stop began at the same time: the call goes on
        return
    taking.cancel()  # a slot granted meanwhile goes to the next waiter
    raise Unavailable(
        "SHUTTING_DOWN", "the server began to stop while the call waited its turn; call again"
    )


def _give_back(taking: asyncio.Future[Any], slots: asyncio.Semaphore) -> None:
    if not taking.done():
        taking.cancel()
    elif not taking.cancelled() and taking.exception() is None:
        slots.release()


class UploadAdmission:
    """What a streamed upload takes before its verdict: its memory (a ByteBudget), then
    a writer thread (one of writers); at most MAX_WAITING_UPLOADS wait for them."""

    def __init__(
        self, memory: ByteBudget, writers: asyncio.Semaphore, stopping: asyncio.Event
    ) -> None:
        self._memory, self._writers, self._stopping = memory, writers, stopping
        self.waiting = 0

    def check_room(self) -> None:
        """Raises ResourceExhausted (UPLOADS_BUSY) when MAX_WAITING_UPLOADS wait."""
        if self.waiting >= MAX_WAITING_UPLOADS:
            raise uploads_busy()

    @contextlib.asynccontextmanager
    async def held(self, size: int) -> AsyncIterator[bool]:
        """size bytes of the memory (none when 0) and a writer, held for the body; yields
        whether they were taken at once (False: the call waited, and what it began may
        have expired meanwhile).

        Raises:
            ResourceExhausted: UPLOADS_BUSY, MAX_WAITING_UPLOADS wait already.
            Unavailable: SHUTTING_DOWN, the server began to stop while the call waited.
        """
        self.check_room()
        at_once = not self._writers.locked() and (not size or self._memory.free_for(size))
        async with contextlib.AsyncExitStack() as taken:
            # Counted while they wait alone: one let in at once does not suspend here.
            self.waiting += 1
            try:
                if size:
                    await taken.enter_async_context(self._memory.held(size, self._stopping))
                await taken.enter_async_context(held(self._writers, self._stopping))
            finally:
                self.waiting -= 1
            yield at_once


def uploads_busy() -> ResourceExhausted:
    return ResourceExhausted(
        "UPLOADS_BUSY",
        f"{MAX_WAITING_UPLOADS} uploads wait for a writer on this server already; "
        "nothing was stored: upload again shortly",
        metadata={"limit": str(MAX_WAITING_UPLOADS)},
    )
