"""The files of one tree (`upload_tree`, a directory's `download`, a model's files in
`load_model`) move several at once. A small file costs round trips to the server and its
database that, one file after another, leave the network and both ends idle: 20,000
small files took 147 s. MLflow's client (3.17) downloads a directory's files on 2 threads
a CPU, at most 20, and uploads them one after another.

Files under the client's direct threshold move several at once (UPLOADS_AT_ONCE,
DOWNLOADS_AT_ONCE); larger ones one after another once the small ones are done: each
moves over several connections of its own (direct transfer) or, streamed to S3, holds a
large share of the server's memory budget for uploads, so a tree of large files holds no
more than one of them would.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Half the uploads a server lets wait for a writer (MAX_WAITING_UPLOADS, 8) once its 64
# are busy: a tree then leaves room in the queue for other clients' uploads, where eight
# took all of it, and every upload else was refused as busy while the tree went on.
UPLOADS_AT_ONCE = 4
# MLflow's download threads on 4 CPUs; a server bounds no downloads by refusal. On 2
# cores, 8 fetched small files from S3 (moto) 1.2-1.4x faster than 4, and as fast from
# disk (`make bench-trees`).
DOWNLOADS_AT_ONCE = 8


def moves_alone(size: int, threshold: int | None) -> bool:
    """Whether a file of size moves after the small ones, one at a time: one that would
    go by direct transfer, of the client's direct threshold or more (none, when direct
    transfer is off: each then streams over the client's connection, as the small ones
    do). An empty file never goes direct (`DirectTransfers.goes_direct`)."""
    return threshold is not None and size >= max(threshold, 1)


@dataclasses.dataclass
class Moved(Generic[T, R]):
    """What moving a tree's files did: the results of those moved, in the order of the
    items given, and the first failure with its item, when one failed."""

    results: list[R]
    failure: tuple[T, Exception] | None = None


async def upload_each(
    items: Sequence[T], move: Callable[[T], Awaitable[R]], alone: Callable[[T], bool]
) -> Moved[T, R]:
    """`move_each`, UPLOADS_AT_ONCE at a time."""
    return await move_each(items, move, alone, UPLOADS_AT_ONCE)


async def download_each(
    items: Sequence[T], move: Callable[[T], Awaitable[R]], alone: Callable[[T], bool]
) -> Moved[T, R]:
    """`move_each`, DOWNLOADS_AT_ONCE at a time."""
    return await move_each(items, move, alone, DOWNLOADS_AT_ONCE)


async def move_each(
    items: Sequence[T],
    move: Callable[[T], Awaitable[R]],
    alone: Callable[[T], bool],
    at_once: int,
) -> Moved[T, R]:
    """Calls move(item) for each item, in their order: those alone() is false of at_once
    at a time, then the others one at a time. After a failure no more begin and those
    under way end (each file moves whole or not at all), so the results name all that
    moved."""
    moved: Moved[T, R] = Moved([])
    done: dict[int, R] = {}
    indexed = list(enumerate(items))
    await _in_turn([pair for pair in indexed if not alone(pair[1])], at_once, move, moved, done)
    await _in_turn([pair for pair in indexed if alone(pair[1])], 1, move, moved, done)
    moved.results = [done[index] for index in sorted(done)]
    return moved


async def _in_turn(
    turn: list[tuple[int, T]],
    at_once: int,
    move: Callable[[T], Awaitable[R]],
    moved: Moved[T, R],
    done: dict[int, R],
) -> None:
    """Moves turn's items at_once at a time into done, by index, unless one failed."""
    waiting = iter(turn)

    async def mover() -> None:
        for index, item in waiting:  # shared: each mover takes the next item
            if moved.failure is not None:
                return
            try:
                done[index] = await move(item)
            except Exception as error:
                if moved.failure is None:
                    moved.failure = (item, error)

    async with asyncio.TaskGroup() as movers:
        for _ in range(min(at_once, len(turn))):
            movers.create_task(mover())
