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

from ..common.errors import Unavailable


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
