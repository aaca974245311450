"""Waits between attempts that a client makes again on its own."""

from __future__ import annotations

import random
from collections.abc import Iterator
from time import monotonic

# How long a server's word that it offers something not (a method, direct transfer)
# holds: past it, a server of another release may answer (one upgraded in place, a
# replica of a rolling update), and asking again costs one call.
NOT_OFFERED_SECONDS = 300.0


def backoff(first: float, longest: float) -> Iterator[float]:
    """Waits doubling from first up to longest, each drawn from its upper half (jittered,
    so that clients refused together do not come back together), as gRPC's retries
    wait."""
    wait = first
    while True:
        yield _draws.uniform(wait / 2, wait)
        wait = min(wait * 2, longest)


class Offer:
    """Whether the server offers something, as this client last heard: `withdrawn` when
    it said it does not, asked for again NOT_OFFERED_SECONDS later."""

    def __init__(self) -> None:
        self._withdrawn_until = 0.0

    @property
    def standing(self) -> bool:
        return monotonic() >= self._withdrawn_until

    def withdraw(self) -> None:
        self._withdrawn_until = monotonic() + NOT_OFFERED_SECONDS


# Drawn from the system's randomness, apart from the random module's own sequence:
# processes that seed it alike (a training script's random.seed(42)) waited alike, and
# an outage changed the numbers the script drew next. No state, so forked workers too
# draw apart.
_draws = random.SystemRandom()
