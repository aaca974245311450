"""WriteSlots: how many writes to one thing (a run), and to all together, hold
connections at once."""

import asyncio
import uuid
from collections.abc import Hashable

from cairn_server.common.write_slots import WriteSlots
from tests.conftest import eventually


class _Writes:
    """Writes that hold their slots until released, counting how many hold at once."""

    def __init__(self, slots: WriteSlots) -> None:
        self.slots = slots
        self.holding = self.most = 0
        self.release = asyncio.Event()

    async def write(self, target: Hashable) -> None:
        async with self.slots.turn(target):
            self.holding += 1
            self.most = max(self.most, self.holding)
            await self.release.wait()
            self.holding -= 1

    async def held_by(self, count: int, targets: list[Hashable]) -> list[asyncio.Task[None]]:
        """Writes to targets, started once count of them hold their slots."""
        writes = [asyncio.create_task(self.write(target)) for target in targets]
        await eventually(lambda: self.holding == count, what=f"{count} writes holding slots")
        return writes


def test_a_target_gets_a_quarter_of_the_pool_and_all_targets_the_rest() -> None:
    slots = [WriteSlots.for_pool(size) for size in (1, 4, 10, 100)]
    assert [(each.per_target, each.in_all) for each in slots] == [
        (1, 1),
        (1, 3),
        (2, 8),
        (25, 75),
    ]


async def test_writes_to_one_target_past_its_slots_wait_and_others_do_not() -> None:
    writes = _Writes(WriteSlots(2, 8))
    busy, other = uuid.uuid4(), uuid.uuid4()
    started = await writes.held_by(2, [busy] * 5)
    async with writes.slots.turn(other), writes.slots.turn(None):  # never wait for busy's
        assert writes.slots.targets() == 2
    writes.release.set()
    await asyncio.gather(*started)

    assert writes.most == 2
    assert writes.slots.targets() == 0  # things written once cost nothing after


async def test_writes_to_many_targets_hold_in_all_slots_together() -> None:
    writes = _Writes(WriteSlots(2, 3))
    started = await writes.held_by(3, [n % 5 for n in range(10)])
    writes.release.set()
    await asyncio.gather(*started)

    assert writes.most == 3
    assert writes.slots.targets() == 0


async def test_a_write_cancelled_while_waiting_leaves_no_slot_behind() -> None:
    writes = _Writes(WriteSlots(1, 1))
    target = uuid.uuid4()
    [holding] = await writes.held_by(1, [target])
    waiting = asyncio.create_task(_enter(writes.slots, target))
    await eventually(lambda: writes.slots.writes_to(target) == 2, what="a write waiting")
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert writes.slots.writes_to(target) == 1
    writes.release.set()
    await holding
    assert writes.slots.targets() == 0
    await asyncio.wait_for(_enter(writes.slots, target), 5)  # free again


async def _enter(slots: WriteSlots, target: uuid.UUID) -> None:
    async with slots.turn(target):
        pass


async def test_a_turn_asked_within_a_turn_is_none_in_the_tasks_its_holder_starts_too() -> None:
    """A call takes its write's turn, and its store asks again: with one slot, the store
    waited for the call's own slot forever, as would a task the call waits on."""
    slots = WriteSlots(1, 1)
    target = uuid.uuid4()
    async with slots.turn(target):
        async with asyncio.timeout(5):
            await _enter(slots, target)  # the store's, in the call's task
            await asyncio.create_task(_enter(slots, target))


async def test_a_task_started_in_a_turn_takes_its_own_once_the_turn_ends() -> None:
    """It shares the turn while the turn lasts, not after: it wrote beside another
    write holding the run's only slot."""
    writes = _Writes(WriteSlots(1, 1))
    target = uuid.uuid4()
    turn_over = asyncio.Event()

    async def after_the_turn() -> None:
        await turn_over.wait()
        await writes.write(target)

    async with writes.slots.turn(target):
        started = asyncio.create_task(after_the_turn())
    [other] = await writes.held_by(1, [target])  # the slot, held by another write
    turn_over.set()
    await eventually(lambda: writes.slots.writes_to(target) == 2, what="the task waiting")
    writes.release.set()
    await asyncio.gather(started, other)
    assert writes.most == 1
