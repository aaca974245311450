"""Answers built off the event loop: converting a large answer's records to messages
holds the loop, and every other call of the process waits on it. So does reading a
large request into records (a batch of 100,000 metric keys, 0.7 s), which is built
here too."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
# Answers of more entries than this (a run's params, tags, metric keys and inputs; an
# experiment's tags; a registry object's tags, properties and aliases) are built off
# the event loop. An entry costs about 1 µs to convert, so an answer built on the loop
# holds it 5 ms at most; a run may hold 120,000 entries, 0.1 s of converting, and a
# page 200,000, while every other call of the process waits on the loop.
ON_LOOP_ENTRIES = 5_000
# One thread for the process: it and the loop share the interpreter's lock, which a
# thread waiting for it takes from the other after 5 ms (sys.getswitchinterval), so the
# loop waits for one thread's turn at a time, not for one of each thread building an
# answer. Answers built at once take turns, as they would on the loop.
_BUILDER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cairn-answers")


async def built(entries: int, build: Callable[[], T]) -> T:
    """build(), the making of an answer holding entries entries: on the loop when that
    is quick, else on the builder thread."""
    if entries <= ON_LOOP_ENTRIES:
        return build()
    return await asyncio.get_running_loop().run_in_executor(_BUILDER, build)
