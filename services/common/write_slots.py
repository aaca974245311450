"""How many of the pool's connections the writes to one thing (a run, a model) may hold.

Writes to one run wait for each other in PostgreSQL, on the rows they share (a key's
latest point, a tag, the run's total), and for a transaction that holds the run (a
delete of it), each waiting there holding a connection: while a run was held, thirty
writes to it took all ten, and every other call of the server waited for the pool,
then was UNAVAILABLE (DATABASE_BUSY). Past a quarter of the pool, a write to a run
waits here for one of the run's slots, holding no connection; what it waits for is the
writes ahead of it, each bounded by the statement timeout, and its caller's deadline.

The writes to all things together hold at most the pool but a quarter: a transaction
holding many runs at once (a delete of their experiment, which the writes to its runs
wait for) would otherwise let a quarter of the pool wait for each of them.

A write takes its slots before any connection, and never a second turn. A recorded
write call takes its turn before its connection (idempotency.py), with a request id or
without (a raw call's: without, a registry write took none); LogBatch and LogMetric,
which are not recorded, take theirs in the store. A turn asked while one is held, by
the call's store or by a task the call starts, is none: a task the call waits on would
wait for the call's own slot. Once the turn ends, the tasks it started take their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass


@dataclass
class _Turn:
    """A write's turn, while held: the tasks started in it share it (they copy the
    variable, and so the same turn), until it ends."""

    held: bool = True


_HOLDING: contextvars.ContextVar[_Turn | None] = contextvars.ContextVar("write_turn", default=None)


@dataclass
class _Slots:
    free: asyncio.Semaphore
    waiting_or_held: int = 0


class WriteSlots:
    """Slots of writes, per_target for each thing written to and in_all for all of them
    together; a target's are dropped when no write holds or awaits one, so things
    written once cost nothing after."""

    def __init__(self, per_target: int, in_all: int) -> None:
        self.per_target, self.in_all = per_target, in_all
        self._targets: dict[Hashable, _Slots] = {}
        self._all = asyncio.Semaphore(in_all)

    @classmethod
    def for_pool(cls, pool_size: int) -> WriteSlots:
        """A quarter of a pool of pool_size connections for each thing, one at least,
        and the rest of the pool for all together."""
        quarter = pool_size // 4
        return cls(max(1, quarter), max(1, pool_size - quarter))

    def turn(self, target: Hashable | None) -> contextlib.AbstractAsyncContextManager[None]:
        """One of target's slots for the body, once one is free; none for None, or
        within a turn held already."""
        holding = _HOLDING.get()
        if target is None or (holding is not None and holding.held):
            return contextlib.nullcontext()
        return self._held(target)

    @contextlib.asynccontextmanager
    async def _held(self, target: Hashable) -> AsyncIterator[None]:
        slots = self._targets.setdefault(target, _Slots(asyncio.Semaphore(self.per_target)))
        slots.waiting_or_held += 1
        try:
            async with slots.free, self._all:  # in this order in every write
                turn = _Turn()
                holding = _HOLDING.set(turn)
                try:
                    yield
                finally:
                    turn.held = False
                    _HOLDING.reset(holding)
        finally:
            slots.waiting_or_held -= 1
            if not slots.waiting_or_held:
                del self._targets[target]

    def targets(self) -> int:
        """How many things have writes holding or awaiting a slot."""
        return len(self._targets)

    def writes_to(self, target: Hashable) -> int:
        """How many writes to target hold or await one of its slots (for tests, as
        targets())."""
        slots = self._targets.get(target)
        return slots.waiting_or_held if slots else 0
