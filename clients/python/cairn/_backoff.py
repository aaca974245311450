"""Waits between attempts that a client makes again on its own."""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff(first: float, longest: float) -> Iterator[float]:
    """Waits doubling from first up to longest, each drawn from its upper half (jittered,
    so that clients refused together do not come back together), as gRPC's retries
    wait."""
    wait = first
    while True:
        yield _draws.uniform(wait / 2, wait)
        wait = min(wait * 2, longest)


# Drawn from the system's randomness, apart from the random module's own sequence:
# processes that seed it alike (a training script's random.seed(42)) waited alike, and
# an outage changed the numbers the script drew next. No state, so forked workers too
# draw apart.
_draws = random.SystemRandom()
