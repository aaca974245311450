"""ReadSlots: how many long reads of each kind, and of both together, hold connections
at once; a read that finds no turn is DATABASE_BUSY and leaves no slot taken."""

import asyncio

import pytest

from cairn_server.common import database
from cairn_server.common.config import Config
from cairn_server.common.errors import Unavailable
from cairn_server.common.read_slots import HISTORIES, SEARCHES, ReadSlots
from tests.conftest import eventually


class _Reads:
    """Reads that hold their turns until released, counting how many got one."""

    def __init__(self, slots: ReadSlots) -> None:
        self.slots = slots
        self.admitted = 0
        self.release = asyncio.Event()

    async def read(self, kind: str) -> None:
        async with self.slots.turn(kind):
            self.admitted += 1
            await self.release.wait()

    async def held_by(self, count: int, kinds: list[str]) -> list[asyncio.Task[None]]:
        """Reads of kinds, started once count of them hold their turns."""
        reads = [asyncio.create_task(self.read(kind)) for kind in kinds]
        await eventually(lambda: self.admitted == count, what=f"{count} reads holding turns")
        return reads


def test_a_kind_gets_half_the_pool_and_both_the_pool_but_a_quarter() -> None:
    slots = [ReadSlots(size, 1.0) for size in (1, 2, 4, 10)]
    assert [(each.per_kind, each.in_all) for each in slots] == [(1, 1), (1, 1), (2, 3), (5, 8)]


async def test_stalled_histories_leave_searches_their_share() -> None:
    reads = _Reads(ReadSlots(10, 30.0))
    held = await reads.held_by(8, [HISTORIES] * 6 + [SEARCHES] * 4)
    assert reads.admitted == 8  # histories 5 of their 6, searches the 3 left of all 8
    reads.release.set()
    await asyncio.gather(*held)  # the two waiting get their turns
    assert reads.admitted == 10


async def test_a_read_without_a_turn_is_busy_and_keeps_no_slot() -> None:
    slots = ReadSlots(2, 0.05)  # one slot of each kind, one of all
    reads = _Reads(slots)
    held = await reads.held_by(1, [HISTORIES])
    with pytest.raises(Unavailable) as busy:  # its kind's slot taken, all's not free
        async with slots.turn(SEARCHES):
            pass
    assert busy.value.reason == "DATABASE_BUSY"
    waiting = asyncio.create_task(reads.read(SEARCHES))
    searches = slots._kinds[SEARCHES]
    await eventually(searches.locked, what="a search holding its kind's slot, waiting for all's")
    waiting.cancel()  # its caller gone while it waits for its turn
    reads.release.set()
    await asyncio.gather(*held)

    async with slots.turn(SEARCHES):  # neither the busy read nor the cancelled one kept one
        assert searches.locked()
    assert waiting.cancelled()


def test_the_shares_leave_out_the_connection_the_key_cache_listens_on() -> None:
    """With keys checked, the key cache holds one connection for good: long reads of
    nine of ten (eight, and it) left every write and key check one connection."""
    sizes = [
        database.usable_connections(Config(auth=auth, db_pool_size=size, db_pool_min_size=0))
        for auth, size in (("none", 10), ("api_key", 10), ("api_key", 2), ("api_key", 1))
    ]
    assert sizes == [10, 9, 1, 1]
    shares = ReadSlots(database.usable_connections(Config(auth="api_key")), 1.0)
    assert (shares.per_kind, shares.in_all) == (4, 7)  # of CAIRN_DB_POOL_SIZE's 10: 2 left
