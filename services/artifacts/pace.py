"""How fast a transfer must go to keep what it holds: a byte-endpoint connection and
its slot, a streamed upload and its writer thread, or a streamed download and its
slot and buffers.

A transfer may be idle for IDLE_SECONDS, and past them must have moved
MIN_BYTES_PER_SECOND on average: a client that stalls, or trickles a byte now and then,
would otherwise hold what it took for ever, and with enough of them take it from every
other client. Progress is told a piece at a time (a chunk of at most 4 MiB, 64 s of it
at this rate), well within the slack.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from ..common.errors import ResourceExhausted

IDLE_SECONDS = 300.0
MIN_BYTES_PER_SECOND = 64 * 1024

T = TypeVar("T")


def due(start: float, moved: int) -> float:
    """The time (on start's clock) by which a transfer that began at start and has
    moved `moved` bytes must move more, or be cut."""
    return start + IDLE_SECONDS + moved / MIN_BYTES_PER_SECOND


class Pace:
    """The pace of a gRPC stream, counting only the time it waits for its client (a
    message to arrive, or one sent to be taken): not the server's own between them (a
    thread to free up, a slow store)."""

    def __init__(self) -> None:
        self.moved = 0
        self._waited = 0.0

    async def within(self, step: Awaitable[T]) -> T:
        """step's result, awaited until the stream falls behind the pace.

        Raises:
            TimeoutError: it fell behind; the caller ends the stream.
        """
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            async with asyncio.timeout(due(0.0, self.moved) - self._waited):
                return await step
        finally:
            self._waited += loop.time() - began


def stalled(transfer: str, idle: str, remedy: str) -> ResourceExhausted:
    """What ends a gRPC stream that fell behind the pace (STREAM_STALLED)."""
    return ResourceExhausted(
        "STREAM_STALLED",
        f"{transfer} fell behind {MIN_BYTES_PER_SECOND // 1024} KiB a second past "
        f"its first {IDLE_SECONDS:g} s, or {idle} for that long; {remedy}",
    )
