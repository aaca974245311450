"""What a sync client leaves to send: its queued writes and open runs, sent when it is dropped."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os

from .._clients.active_run import ActiveRun
from .._clients.run_operations import end_background_writes
from .._transport import Transport
from .loop import Gate, stop

_log = logging.getLogger("cairn")


class Queued:
    """What a runner's client leaves to send: the writes it queued with
    synchronous=False, and the runs entered and not left. Held by the runner and by
    what ends it when it is dropped, not the other way round: the runs are held
    strongly, as a run entered in a function whose client went with it was collected
    with the runner, and what it buffered with it."""

    def __init__(self) -> None:
        self.transport: Transport | None = None  # set by the client made on the runner
        self.open_runs: set[ActiveRun] = set()

    async def send(self, final: bool = True) -> None:
        if self.transport is not None:
            await end_background_writes(self.transport, final)

    async def settle(self) -> None:
        """The open runs ended, then the queued writes sent: all that is left to do
        of a client dropped unclosed."""
        await ended_left_open(list(self.open_runs), "its client was dropped")
        await self.send()


# The loops of dropped runners still sending their queued writes: the exit waits for
# them, as for the runners alive (`runner.runners`).
dropped_sending: set[concurrent.futures.Future[None]] = set()
os.register_at_fork(after_in_child=dropped_sending.clear)  # the child runs none of those loops


def stop_dropped(loop: asyncio.AbstractEventLoop, pid: int, gate: Gate, queued: Queued) -> None:
    """Has the loop of a runner dropped unclosed end its open runs and send its queued
    writes, then stop; meanwhile what is left of it (the end of an iterator collected
    with it) is refused, not left waiting for ever. In the process that runs it only (a
    forked child's copy runs nowhere). It does not wait: it may run on the loop's own
    thread."""
    if os.getpid() == pid and gate.close():
        sending = asyncio.run_coroutine_threadsafe(queued.settle(), loop)
        dropped_sending.add(sending)
        # Stopped once the future has its result, not from the coroutine: a loop stops
        # before the callbacks its last step scheduled, which set it.
        sending.add_done_callback(functools.partial(_stop_sent, loop, gate))


def _stop_sent(
    loop: asyncio.AbstractEventLoop, gate: Gate, sending: concurrent.futures.Future[None]
) -> None:
    dropped_sending.discard(sending)
    stop(loop, gate)


async def ended_left_open(runs: list[ActiveRun], as_what: str = "the interpreter exited") -> None:
    ending = (run.end_left_open(as_what) for run in runs)
    results = await asyncio.gather(*ending, return_exceptions=True)
    for run, result in zip(runs, results, strict=True):
        if isinstance(result, BaseException):  # the exit goes on: the others end all the same
            _log.warning("run %s could not be ended as %s: %s", run.run_id, as_what, result)
