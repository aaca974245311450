"""How many of the pool's connections the writes to one run may hold at once.

Writes to one run wait for each other in PostgreSQL, on the rows they share (a key's
latest point, the run's total), and for a transaction that holds the run (a delete of
it), each waiting there holding a connection: while a run was held, thirty writes to
it took all ten, and every other call of the server waited for the pool, then was
UNAVAILABLE (DATABASE_BUSY). Past a quarter of the pool, a write to a run waits here
for one of the run's slots, holding no connection; what it waits for is the writes
ahead of it, each bounded by the statement timeout, and its caller's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class _Slots:
    free: asyncio.Semaphore
    waiting_or_held: int = field(default=0)


class RunSlots:
    """Slots of writes, per_run for each run; a run's are dropped when no write holds or
    awaits one, so runs written once cost nothing after."""

    def __init__(self, per_run: int) -> None:
        self.per_run = per_run
        self._runs: dict[uuid.UUID, _Slots] = {}

    @classmethod
    def for_pool(cls, pool_size: int) -> RunSlots:
        """A quarter of a pool of pool_size connections, one at least."""
        return cls(max(1, pool_size // 4))

    @contextlib.asynccontextmanager
    async def held(self, run_id: uuid.UUID) -> AsyncIterator[None]:
        """Holds one of the run's slots for the body, once one is free."""
        slots = self._runs.setdefault(run_id, _Slots(asyncio.Semaphore(self.per_run)))
        slots.waiting_or_held += 1
        try:
            async with slots.free:
                yield
        finally:
            slots.waiting_or_held -= 1
            if not slots.waiting_or_held:
                del self._runs[run_id]

    def runs(self) -> int:
        """How many runs have writes holding or awaiting a slot."""
        return len(self._runs)
