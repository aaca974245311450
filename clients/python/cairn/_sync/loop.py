"""A sync client's private event loop: the thread that runs it, and how it is stopped."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

# How long closing a client, or a call interrupted by Ctrl-C, waits for the calls it
# cancels to end.
CLOSE_WAIT_SECONDS = 5.0


class Gate:
    """Whether a runner's loop still takes work."""

    def __init__(self) -> None:
        # Reentrant: a collection may run the finalizer of a dropped runner on a thread
        # that holds the gate of another.
        self.lock = threading.RLock()
        self.closed = False
        self.stopping = threading.Event()  # set as the loop is told to stop (`stop`)

    def close(self) -> bool:
        """Takes no more work; whether it took work until now."""
        with self.lock:
            taking, self.closed = not self.closed, True
            return taking


def run_until_stopped(loop: asyncio.AbstractEventLoop, gate: Gate) -> None:
    while True:
        try:
            loop.run_forever()
        except (SystemExit, KeyboardInterrupt):
            # Raised by the caller's code the loop ran (a progress callable, a file
            # object): asyncio lets it out of the loop, and the task that ran it holds
            # it, for its call to raise in the caller's thread. The loop goes on: ended
            # here, that call, every later one, close() and the exit waited for ever.
            # Unless told to stop: run_forever forgets a stop it had not reached.
            if not gate.stopping.is_set():
                continue
        break
    loop.close()  # its files too, however it was stopped


def stop(loop: asyncio.AbstractEventLoop, gate: Gate) -> None:
    """Tells the loop to stop, for good (`run_until_stopped`)."""
    gate.stopping.set()
    loop.call_soon_threadsafe(loop.stop)


async def end_other_tasks() -> None:
    """Cancels every task of the loop but this one and waits, a bounded time, for them
    to end."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    for task in others:
        task.cancel()
    if others:
        await asyncio.wait(others, timeout=CLOSE_WAIT_SECONDS)


async def task_ended(task: list[asyncio.Task[Any]]) -> None:
    """Once the task (if it ran) has ended, or CLOSE_WAIT_SECONDS have passed."""
    if task:
        await asyncio.wait(task, timeout=CLOSE_WAIT_SECONDS)
