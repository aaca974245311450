"""How a tree's files take turns (`_many_files.move_each`): small ones several at once,
large ones one at a time after them, results in the order given, and a failure that
lets those under way end and begins no more."""

import asyncio

import pytest

from cairn._clients._many_files import UPLOADS_AT_ONCE, move_each, moves_alone
from cairn_server.artifacts import slots

FILES_AT_ONCE = 3


class Files:
    """Moves that wait until let go, recording which run at once."""

    def __init__(self) -> None:
        self.running: set[str] = set()
        self.most_at_once = 0
        self.begun: list[str] = []
        self.go: dict[str, asyncio.Event] = {}
        self.failing: set[str] = set()
        self._changed = asyncio.Event()

    async def move(self, name: str) -> str:
        self.begun.append(name)
        self.running.add(name)
        self._changed.set()
        self.most_at_once = max(self.most_at_once, len(self.running))
        try:
            await self.go.setdefault(name, asyncio.Event()).wait()
            if name in self.failing:
                raise OSError(f"{name} failed")
            return name.upper()
        finally:
            self.running.discard(name)
            self._changed.set()

    def let_go(self, *names: str) -> None:
        for name in names:
            self.go.setdefault(name, asyncio.Event()).set()

    async def until_running(self, *names: str) -> None:
        while not self.running >= set(names):
            await self._next_change()

    async def until_ended(self, name: str) -> None:
        while name in self.running:
            await self._next_change()

    async def _next_change(self) -> None:
        self._changed.clear()
        await self._changed.wait()


def never_alone(name: str) -> bool:
    return False


async def test_small_files_go_several_at_once_and_answer_in_their_order() -> None:
    files, names = Files(), [f"f{number}" for number in range(FILES_AT_ONCE + 2)]
    moving = asyncio.create_task(move_each(names, files.move, never_alone, FILES_AT_ONCE))
    await files.until_running(*names[:FILES_AT_ONCE])

    assert files.begun == names[:FILES_AT_ONCE], "no more than FILES_AT_ONCE begin"
    files.let_go(*reversed(names))  # the last ones end first
    moved = await moving

    assert moved.results == [name.upper() for name in names]
    assert moved.failure is None
    assert files.most_at_once == FILES_AT_ONCE


async def test_files_that_move_alone_go_one_at_a_time_after_the_others() -> None:
    files = Files()
    moving = asyncio.create_task(
        move_each(["big1", "s1", "big2", "s2"], files.move, big, FILES_AT_ONCE)
    )
    await files.until_running("s1", "s2")
    assert files.begun == ["s1", "s2"], "large files wait for the small ones"
    files.let_go("s1", "s2")
    await files.until_running("big1")

    assert files.running == {"big1"}
    files.let_go("big1")
    await files.until_running("big2")
    assert files.running == {"big2"}
    files.let_go("big2")
    assert (await moving).results == ["BIG1", "S1", "BIG2", "S2"]


def big(name: str) -> bool:
    return name.startswith("big")


async def test_a_failure_lets_those_under_way_end_and_begins_no_more() -> None:
    files, names = Files(), [f"f{number}" for number in range(FILES_AT_ONCE * 2)] + ["big"]
    files.failing.add("f0")
    moving = asyncio.create_task(move_each(names, files.move, big, FILES_AT_ONCE))
    await files.until_running(*names[:FILES_AT_ONCE])
    files.let_go("f0")
    await files.until_ended("f0")  # in the step that hands move_each its error
    files.let_go(*names)
    moved = await moving

    assert files.begun == names[:FILES_AT_ONCE]
    assert moved.results == [name.upper() for name in names[1:FILES_AT_ONCE]]
    assert moved.failure is not None
    assert moved.failure[0] == "f0"
    assert str(moved.failure[1]) == "f0 failed"


async def test_a_cancelled_tree_cancels_each_file_under_way() -> None:
    files, names = Files(), ["a", "b", "c"]
    moving = asyncio.create_task(move_each(names, files.move, never_alone, FILES_AT_ONCE))
    await files.until_running(*names)

    moving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await moving
    assert files.running == set()


@pytest.mark.parametrize(
    ("size", "threshold", "alone"),
    [(10, None, False), (10, 11, False), (11, 11, True), (1, 0, True), (0, 0, False)],
)
def test_files_of_the_direct_threshold_or_more_move_alone(
    size: int, threshold: int | None, alone: bool
) -> None:
    assert moves_alone(size, threshold) is alone


def test_a_tree_leaves_room_among_the_uploads_a_server_lets_wait() -> None:
    """Eight at once took every place of the server's queue once its writers were busy:
    every other client's upload was refused as busy while the tree went on."""
    assert UPLOADS_AT_ONCE <= slots.MAX_WAITING_UPLOADS // 2
