"""Refusing client addresses that fail to authenticate too often (brute force)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# Beyond this many tracked addresses, those whose window has passed are forgotten.
_PRUNE_ABOVE = 10_000


@dataclass
class _Window:
    start: float
    failures: int


class FailureLimiter:
    """Counts failed authentications per client address in fixed windows.

    An address with `limit` failures in its current window is refused, valid key or
    not, until the window ends. Successes do not reset the count: a caller holding one
    valid key must not be able to keep guessing others.
    """

    def __init__(
        self, limit: int, window_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = limit
        self._window = window_seconds
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def blocked(self, address: str) -> bool:
        window = self._current(address)
        return window is not None and window.failures >= self._limit

    def record_failure(self, address: str) -> int:
        """Counts one failure; returns the failures of the address in this window."""
        window = self._current(address)
        if window is None:
            if len(self._windows) >= _PRUNE_ABOVE:
                self._prune()
            window = self._windows[address] = _Window(self._clock(), 0)
        window.failures += 1
        return window.failures

    def _current(self, address: str) -> _Window | None:
        window = self._windows.get(address)
        if window is not None and self._clock() - window.start >= self._window:
            del self._windows[address]
            return None
        return window

    def _prune(self) -> None:
        now = self._clock()
        for address in [a for a, w in self._windows.items() if now - w.start >= self._window]:
            del self._windows[address]


def client_address(peer: str) -> str:
    """The host of a gRPC peer string ("ipv4:10.0.0.7:51234", "ipv6:[::1]:5", "unix:...")."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rpartition(":")[0].strip("[]")
    return peer
