"""How many of the pool's connections the long reads may hold at once.

A metric history holds its connection while its client reads the stream, and a search
of runs ordered by several params or metrics sorts every matching run for each page
(seconds, on tens of thousands of runs). Twelve such searches at once took all ten of
the pool's connections and the server's own background work found none; a search of
20 ms, waiting behind them, took 14 s. Together they hold at most half the pool: one
more waits here for its turn, holding no connection, as long as a call waits for a
connection, then is UNAVAILABLE (DATABASE_BUSY), which clients retry. However long
reads behave, every other call finds a connection (with a pool of 2 or more).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from .errors import Unavailable


class ReadSlots:
    """The long reads' slots: half of a pool of pool_size connections (one at least);
    a read waits wait_seconds at most for one."""

    def __init__(self, pool_size: int, wait_seconds: float) -> None:
        self.readers = max(1, pool_size // 2)
        self._free = asyncio.Semaphore(self.readers)
        self._wait = wait_seconds

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Holds one slot while the block runs.

        Raises:
            Unavailable: (DATABASE_BUSY) every slot stayed taken for wait_seconds.
        """
        try:
            async with asyncio.timeout(self._wait):
                await self._free.acquire()
        except TimeoutError:
            raise Unavailable(
                "DATABASE_BUSY",
                f"{self.readers} long reads (metric histories and searches of runs, half "
                f"the pool's connections) were under way throughout {self._wait:g} s "
                "(CAIRN_DB_ACQUIRE_TIMEOUT_SECONDS); try again",
            ) from None
        try:
            yield
        finally:
            self._free.release()
