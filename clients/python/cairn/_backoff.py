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
        yield random.uniform(wait / 2, wait)
        wait = min(wait * 2, longest)
