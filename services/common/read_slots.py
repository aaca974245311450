"""How many of the pool's connections the long reads may hold at once.

A metric history holds its connection while its client reads the stream, and a search
of runs ordered by several params or metrics sorts every matching run for each page
(seconds, on tens of thousands of runs). Twelve such searches at once took all ten of
the pool's connections and the server's own background work found none; a search of
20 ms, waiting behind them, took 14 s. Only searches that sort take turns: a walked
page costs about its size (tracking/store/search.py).

Each kind holds at most half the pool, and both together the pool but a quarter (one
connection at least): readers of histories that stop reading, however many, leave
searches a share of their own (with a pool of 3 or more), and every other call finds a
connection (with a pool of 2 or more). The pool here is the connections calls may use:
with keys checked, the key cache holds one for good (database.usable_connections).

A read past those limits waits here for its turn, holding no connection, as long as a
call waits for a connection, then is UNAVAILABLE (DATABASE_BUSY), which clients retry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from .errors import Unavailable

HISTORIES = "metric histories"
SEARCHES = "searches of runs"


class ReadSlots:
    """The long reads' slots, of a pool of pool_size connections; a read waits
    wait_seconds at most for its turn."""

    def __init__(self, pool_size: int, wait_seconds: float) -> None:
        self.per_kind = max(1, pool_size // 2)
        self.in_all = max(1, pool_size - max(1, pool_size // 4))
        self._kinds = {kind: asyncio.Semaphore(self.per_kind) for kind in (HISTORIES, SEARCHES)}
        self._all = asyncio.Semaphore(self.in_all)
        self._wait = wait_seconds

    @contextlib.asynccontextmanager
    async def turn(self, kind: str) -> AsyncIterator[None]:
        """Holds a slot of kind (HISTORIES, SEARCHES) and one of all long reads while
        the block runs, taken in that order.

        Raises:
            Unavailable: (DATABASE_BUSY) no turn came within wait_seconds.
        """
        held: list[asyncio.Semaphore] = []
        try:
            async with asyncio.timeout(self._wait):
                for slots in (self._kinds[kind], self._all):
                    await slots.acquire()
                    held.append(slots)
        except BaseException as error:
            for slots in held:
                slots.release()
            if isinstance(error, TimeoutError):
                raise self._busy(kind) from None
            raise
        try:
            yield
        finally:
            for slots in held:
                slots.release()

    def _busy(self, kind: str) -> Unavailable:
        return Unavailable(
            "DATABASE_BUSY",
            f"{self.per_kind} {kind}, or {self.in_all} long reads in all, were under way "
            f"throughout {self._wait:g} s (CAIRN_DB_ACQUIRE_TIMEOUT_SECONDS); try again",
        )
