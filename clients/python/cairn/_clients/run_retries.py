"""How an ActiveRun's calls are retried through an outage: jittered, capped backoff."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .._backoff import backoff
from .._channels import resent_after
from ..exceptions import (
    CairnError,
    DeadlineExceededError,
    ResourceExhaustedError,
    UnavailableError,
)

# Failures that a later attempt may not meet: the server or its database away, a deadline,
# a limit, and what the transport sends again (resent_after) when its attempts ran out.
# Anything else (a deleted run, a bad value) is the caller's to know at once.
_TRANSIENT = (UnavailableError, DeadlineExceededError, ResourceExhaustedError)


def _transient(error: CairnError) -> bool:
    return isinstance(error, _TRANSIENT) or resent_after(error)


FIRST_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 5.0
T = TypeVar("T")
_log = logging.getLogger("cairn")


async def retrying(
    call: Callable[[], Awaitable[T]], failed: Callable[[], Awaitable[None]] | None = None
) -> T:
    """call() until it succeeds or fails with an error that is not transient; failed()
    after each transient failure. The waits are jittered: the runs of many processes
    that one restart refused came back together, every 5 s, for as long as it lasted."""
    waits = backoff(FIRST_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS)
    while True:
        try:
            return await call()
        except CairnError as error:
            if not _transient(error):
                raise
            wait = next(waits)
            _log.info("retrying in %.1f s after %s", wait, error)
            if failed is not None:
                await failed()
            await asyncio.sleep(wait)
