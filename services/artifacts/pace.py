"""How fast a transfer must go to keep what it holds: a byte-endpoint connection and
its slot, or a streamed upload and its writer thread.

A transfer may be idle for IDLE_SECONDS, and past them must have moved
MIN_BYTES_PER_SECOND on average: a client that stalls, or trickles a byte now and then,
would otherwise hold what it took for ever, and with enough of them take it from every
other client. Progress is told a piece at a time (a chunk of at most 4 MiB, 64 s of it
at this rate), well within the slack.
"""

from __future__ import annotations

IDLE_SECONDS = 300.0
MIN_BYTES_PER_SECOND = 64 * 1024


def due(start: float, moved: int) -> float:
    """The time (on start's clock) by which a transfer that began at start and has
    moved `moved` bytes must move more, or be cut."""
    return start + IDLE_SECONDS + moved / MIN_BYTES_PER_SECOND
