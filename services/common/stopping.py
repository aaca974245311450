"""A server's stopping: when it stops taking calls, and when it cuts those still running."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from . import logs

# Shutdown waits for background work this much past the grace period before it leaves
# it behind (database.close_pool bounds the wait for the pool's connections).
STOP_MARGIN_SECONDS = 1.0
_log = logs.get("cairn.server")


class Stopping(asyncio.Event):
    """A CairnServer's `Resources.stopping`: set when the server stops taking calls;
    `grace_ends` is then the loop time at which it cuts the calls still running. Work a
    service ends on its own once it is set (the byte endpoint's transfers), it `holds`:
    the stop waits for it, within the grace period, before the pool closes."""

    def __init__(self) -> None:
        super().__init__()
        self.grace_ends = math.inf
        self._held: set[asyncio.Task[Any]] = set()

    def holds(self, ending: asyncio.Task[Any]) -> None:
        self._held.add(ending)

    async def held_ended(self, grace: float) -> None:
        """Waits for the work held, at most grace (and the stop's margin) seconds."""
        if not self._held:
            return
        _, stuck = await asyncio.wait(self._held, timeout=grace + STOP_MARGIN_SECONDS)
        if stuck:
            _log.warning("work left behind at shutdown", tasks=[t.get_name() for t in stuck])

    def has_cut(self) -> bool:
        """Whether the calls still running were cut (the grace ended, or stop_now): their
        clients are told UNAVAILABLE. Within the grace a call ends as its client sees."""
        return self.is_set() and asyncio.get_running_loop().time() >= self.grace_ends
