"""RunSlots: how many writes to one run hold connections at once."""

import asyncio
import uuid

from cairn_server.tracking.store.run_slots import RunSlots
from tests.conftest import eventually


def test_a_run_gets_a_quarter_of_the_pool_and_one_at_least() -> None:
    assert [RunSlots.for_pool(size).per_run for size in (1, 4, 10, 100)] == [1, 1, 2, 25]


async def test_writes_to_one_run_past_its_slots_wait_and_other_runs_do_not() -> None:
    slots = RunSlots(2)
    busy, other = uuid.uuid4(), uuid.uuid4()
    holding = 0
    most = 0
    release = asyncio.Event()

    async def write(run_id: uuid.UUID) -> None:
        nonlocal holding, most
        async with slots.held(run_id):
            holding += 1
            most = max(most, holding)
            await release.wait()
            holding -= 1

    writes = [asyncio.create_task(write(busy)) for _ in range(5)]
    await eventually(lambda: holding == 2, what="two writes holding busy's slots")
    async with slots.held(other):  # another run's write never waits for busy's
        assert slots.runs() == 2
    release.set()
    await asyncio.gather(*writes)

    assert most == 2
    assert slots.runs() == 0  # runs written once cost nothing after
