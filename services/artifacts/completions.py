"""The completions of uploads of parts (CompleteUploadTicket on S3) running in this
process, each in a task of its own.

A completion reads its object back on a thread that cannot be stopped, so a call whose
caller leaves (its deadline passed, the client was cancelled) does not cut its
completion: it runs to its end, holding its lease and its slot until then, told that
nobody waits for its answer. The server's shutdown settles them while the database pool
is still open: it waits for them within its grace period, then cancels the rest, whose
leases are released on the way out (a lease left to expire would keep every completion
off the upload for up to `leases.LEASE`). They are cut a little before the grace period
ends (RELEASE_TIME), so that their leases are released and their callers told to call
again (SHUTTING_DOWN) before the server cuts every call still running.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from ..common import logs
from ..common.errors import Unavailable
from ..common.service import Resources
from ..common.stopping import Stopping

# The end of a shutdown's grace period left to the completions it cuts (at most half of
# it): a lease's release is one UPDATE, an answer one message.
RELEASE_TIME = timedelta(seconds=0.5)
_T = TypeVar("_T")
_log = logs.get("cairn.artifacts.completions")


@dataclass
class Caller:
    """Whether the call a completion runs for still waits for its answer."""

    waiting: bool = True


class Completions:
    """The completions under way in one server, which its shutdown settles."""

    def __init__(self) -> None:
        self._stopped = False  # by `settle`: no completion begins any more
        self._running: set[asyncio.Task[Any]] = set()

    async def run(self, work: Callable[[Caller], Coroutine[Any, Any, _T]]) -> _T:
        """Awaits work(caller), run in a task of its own: cancelling the caller leaves
        it running to its end, its `Caller` no longer waiting.

        Raises:
            Unavailable: the server is stopping, and nothing was done, or it stopped
                the completion within its grace period (SHUTTING_DOWN); call again.
        """
        if self._stopped:
            raise Unavailable("SHUTTING_DOWN", "the server is stopping; call again")
        caller = Caller()
        task = asyncio.ensure_future(work(caller))
        self._running.add(task)
        task.add_done_callback(functools.partial(self._ended, caller))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled() and not _being_cancelled():  # by `settle`, not the caller
                raise Unavailable(
                    "SHUTTING_DOWN", "the server stopped before the completion ended; call again"
                ) from None
            caller.waiting = False
            raise

    def _ended(self, caller: Caller, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if task.cancelled():
            return
        error = task.exception()  # retrieved even when no caller is left to see it
        if error is not None and not caller.waiting:
            # Nobody else hears of it: a repeat, if one comes, judges the upload again.
            _log.warning("completion ended after its caller left", error=repr(error))

    async def settle(self, grace_ends: float) -> None:
        """Takes no more completions, waits for those under way until RELEASE_TIME
        before grace_ends (a loop time), then cancels the rest and waits for them to
        release what they hold."""
        self._stopped = True
        now = asyncio.get_running_loop().time()
        left_to_them = grace_ends - now
        cut = left_to_them - min(RELEASE_TIME.total_seconds(), left_to_them / 2)
        if self._running and cut > 0:
            await asyncio.wait(set(self._running), timeout=cut)
        left = set(self._running)
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left)
            _log.warning("completions cut by the shutdown", count=len(left))


# One set per server, shared by its servicer and its shutdown, keyed by the event its
# resources share (a server's Resources is built once, and every service is given it).
# A set holds nothing of its key, so that it goes with its server.
_OF_SERVER: weakref.WeakKeyDictionary[asyncio.Event, Completions] = weakref.WeakKeyDictionary()


def of(resources: Resources) -> Completions:
    """The completions of the server whose resources these are."""
    found = _OF_SERVER.get(resources.stopping)
    if found is None:
        found = _OF_SERVER[resources.stopping] = Completions()
    return found


async def settle_on_stop(resources: Resources) -> None:
    """Background work of the service (started with the server, cancelled first when it
    stops, and waited for before its gRPC server stops and its pool closes): settles
    the completions once the server stops."""
    try:
        await resources.stopping.wait()
    finally:
        await of(resources).settle(_grace_ends(resources))


def _grace_ends(resources: Resources) -> float:
    """The loop time at which the stopping server cuts the calls still running."""
    if isinstance(resources.stopping, Stopping):
        return resources.stopping.grace_ends
    return asyncio.get_running_loop().time() + resources.config.shutdown_grace_seconds


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
