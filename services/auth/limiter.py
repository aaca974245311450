"""Refusing client addresses that fail to authenticate too often (brute force)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..common.peers import counted_address

# The most windows kept: past it, new addresses share one overflow window instead of
# growing the table (or the time each failure costs) without bound.
MAX_WINDOWS = 10_000


@dataclass
class _Window:
    start: float
    failures: int


class FailureLimiter:
    """Counts failed authentications per client address in fixed windows.

    An address with `limit` failures in its current window is refused, valid key or
    not, until the window ends. Successes do not reset the count: a caller holding one
    valid key must not be able to keep guessing others. IPv6 addresses are counted per
    /64, the block one subscriber usually holds whole.

    A window lives until it ends, never pushed out by newer ones: evicting to make room
    would let a flood cycling through more addresses than the table holds push each
    window out before it reached the limit. While the table is full, addresses without
    a window of their own share one overflow window, so such a flood is refused as a
    whole (and with it any newcomer, until the table has room or the overflow ends).
    """

    def __init__(
        self, limit: int, window_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = limit
        self._window = window_seconds
        self._clock = clock
        # In the order the windows started (a window is only ever added at the end, at
        # the clock's time), so the expired ones are always at the front.
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        self._overflow: _Window | None = None

    def blocked(self, address: str) -> bool:
        window = self._current(counted_address(address))
        if window is None and self._full():
            window = self._current_overflow()
        return window is not None and window.failures >= self._limit

    def record_failure(self, address: str) -> int:
        """Counts one failure; returns the failures of the address in this window (of
        the overflow window, for an address counted there)."""
        key = counted_address(address)
        window = self._current(key)
        if window is None and not self._full():
            window = self._windows[key] = _Window(self._clock(), 0)
        elif window is None:
            window = self._current_overflow()
            if window is None:
                window = self._overflow = _Window(self._clock(), 0)
        window.failures += 1
        return window.failures

    def _current(self, key: str) -> _Window | None:
        window = self._windows.get(key)
        if window is not None and self._expired(window):
            del self._windows[key]
            return None
        return window

    def _full(self) -> bool:
        """Whether the table holds MAX_WINDOWS windows that have not ended."""
        self._forget_expired()
        return len(self._windows) >= MAX_WINDOWS

    def _current_overflow(self) -> _Window | None:
        if self._overflow is not None and self._expired(self._overflow):
            self._overflow = None
        return self._overflow

    def _forget_expired(self) -> None:
        """Drops the expired windows, from the front: each window is dropped once, so a
        burst of failures from N addresses costs O(N) in all."""
        while self._windows and self._expired(next(iter(self._windows.values()))):
            self._windows.popitem(last=False)

    def _expired(self, window: _Window) -> bool:
        return self._clock() - window.start >= self._window
