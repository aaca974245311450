"""How many of the pool's connections the writes to one thing (a run, a model) may hold.

Writes to one run wait for each other in PostgreSQL, on the rows they share (a key's
latest point, a tag, the run's total), and for a transaction that holds the run (a
delete of it), each waiting there holding a connection: while a run was held, thirty
writes to it took all ten, and every other call of the server waited for the pool,
then was UNAVAILABLE (DATABASE_BUSY). Past a quarter of the pool, a write to a run
waits here for one of the run's slots, holding no connection; what it waits for is the
writes ahead of it, each bounded by the statement timeout, and its caller's deadline.

A write takes its slot before any connection, and never a second one: a write recorded
by its request id takes it before its call's connection (idempotency.py), and its
store, finding the call's connection, takes none (`in_call_transaction`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass


@dataclass
class _Slots:
    free: asyncio.Semaphore
    waiting_or_held: int = 0


class WriteSlots:
    """Slots of writes, per_target for each thing written to; a target's are dropped
    when no write holds or awaits one, so things written once cost nothing after."""

    def __init__(self, per_target: int) -> None:
        self.per_target = per_target
        self._targets: dict[Hashable, _Slots] = {}

    @classmethod
    def for_pool(cls, pool_size: int) -> WriteSlots:
        """A quarter of a pool of pool_size connections, one at least."""
        return cls(max(1, pool_size // 4))

    def turn(self, target: Hashable | None) -> contextlib.AbstractAsyncContextManager[None]:
        """One of target's slots for the body, once one is free; none for None."""
        return contextlib.nullcontext() if target is None else self._held(target)

    @contextlib.asynccontextmanager
    async def _held(self, target: Hashable) -> AsyncIterator[None]:
        slots = self._targets.setdefault(target, _Slots(asyncio.Semaphore(self.per_target)))
        slots.waiting_or_held += 1
        try:
            async with slots.free:
                yield
        finally:
            slots.waiting_or_held -= 1
            if not slots.waiting_or_held:
                del self._targets[target]

    def targets(self) -> int:
        """How many things have writes holding or awaiting a slot."""
        return len(self._targets)
