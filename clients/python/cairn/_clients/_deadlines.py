"""A transfer's timeout held across all it does: an upload's attempts and the waits
between them, a download's streams opened again where a cut one stopped. Apart from
_uploads.py and _downloads.py, which both bound their transfers so, and from
_headers.py, whose timeout checks are those of one call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from .._headers import check_timeout
from ..exceptions import DeadlineExceededError


@contextlib.asynccontextmanager
async def within(timeout: float | None, what: str) -> AsyncIterator[asyncio.Timeout]:
    """The block bounded by a call's timeout (None: unbounded) as a whole, raising
    DeadlineExceededError once it passed. A TimeoutError of the block's own (an attempt's
    DEADLINE_EXCEEDED, a file's ETIMEDOUT) is raised as it is."""
    seconds = check_timeout(timeout)
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            yield deadline
    except TimeoutError:
        if seconds is None or not deadline.expired():
            raise
        raise DeadlineExceededError(
            f"{what} did not end within its timeout of {seconds:g} s"
        ) from None


class Deadline:
    """The time left of a call's timeout (None: no deadline) across the streams it opens."""

    def __init__(self, timeout: float | None) -> None:
        self._ends = None if timeout is None else time.monotonic() + timeout

    def left(self) -> float | None:
        # Never 0, which a call refuses as a timeout: so little time fails the call
        # DEADLINE_EXCEEDED, as it should.
        return None if self._ends is None else max(self._ends - time.monotonic(), 0.001)

    def passed(self) -> bool:
        return self._ends is not None and time.monotonic() >= self._ends
