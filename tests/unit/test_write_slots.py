"""WriteSlots: how many writes to one thing (a run) hold connections at once."""

import asyncio
import uuid

from cairn_server.common.write_slots import WriteSlots
from tests.conftest import eventually


def test_a_target_gets_a_quarter_of_the_pool_and_all_targets_the_rest() -> None:
    slots = [WriteSlots.for_pool(size) for size in (1, 4, 10, 100)]
    assert [(each.per_target, each.in_all) for each in slots] == [
        (1, 1),
        (1, 3),
        (2, 8),
        (25, 75),
    ]


async def test_writes_to_one_target_past_its_slots_wait_and_others_do_not() -> None:
    slots = WriteSlots(2, 8)
    busy, other = uuid.uuid4(), uuid.uuid4()
    holding = 0
    most = 0
    release = asyncio.Event()

    async def write(target: uuid.UUID) -> None:
        nonlocal holding, most
        async with slots.turn(target):
            holding += 1
            most = max(most, holding)
            await release.wait()
            holding -= 1

    writes = [asyncio.create_task(write(busy)) for _ in range(5)]
    await eventually(lambda: holding == 2, what="two writes holding busy's slots")
    async with slots.turn(other), slots.turn(None):  # others never wait for busy's
        assert slots.targets() == 2
    release.set()
    await asyncio.gather(*writes)

    assert most == 2
    assert slots.targets() == 0  # things written once cost nothing after


async def test_a_write_cancelled_while_waiting_leaves_no_slot_behind() -> None:
    slots = WriteSlots(1, 1)
    target = uuid.uuid4()
    async with slots.turn(target):
        waiting = asyncio.create_task(_enter(slots, target))
        await eventually(lambda: not waiting.done() and slots.targets() == 1, what="waiting")
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
    assert slots.targets() == 0
    await asyncio.wait_for(_enter(slots, target), 5)  # free again


async def _enter(slots: WriteSlots, target: uuid.UUID) -> None:
    async with slots.turn(target):
        pass


async def test_writes_to_many_targets_hold_in_all_slots_together() -> None:
    slots = WriteSlots(2, 3)
    holding = 0
    most = 0
    release = asyncio.Event()

    async def write(target: int) -> None:
        nonlocal holding, most
        async with slots.turn(target):
            holding += 1
            most = max(most, holding)
            await release.wait()
            holding -= 1

    writes = [asyncio.create_task(write(n % 5)) for n in range(10)]
    await eventually(lambda: holding == 3, what="three writes holding slots")
    release.set()
    await asyncio.gather(*writes)

    assert most == 3
    assert slots.targets() == 0
