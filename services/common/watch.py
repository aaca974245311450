"""Health that follows the database: NOT_SERVING while PostgreSQL cannot be reached.

A load balancer or Kubernetes then stops sending calls that could only fail. One slow
answer is not an outage: the state changes after two probes in a row disagree with it;
and a pool busy with calls is no outage either.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import asyncpg

from . import logs

PROBE_INTERVAL_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 2.0
PROBES_TO_CHANGE = 2
_log = logs.get("cairn.health")


async def watch_database(
    pool: asyncpg.Pool,
    report: Callable[[bool], Awaitable[None]],
    interval: float = PROBE_INTERVAL_SECONDS,
) -> None:
    """Probes the database every interval until cancelled; calls report(reachable)
    when PROBES_TO_CHANGE probes in a row say the opposite of what was last reported."""
    reachable, disagreeing = True, 0
    while True:
        await asyncio.sleep(interval)
        if await _probe(pool) == reachable:
            disagreeing = 0
            continue
        disagreeing += 1
        if disagreeing >= PROBES_TO_CHANGE:
            reachable, disagreeing = not reachable, 0
            _log.warning("database reachable" if reachable else "database unreachable")
            await report(reachable)


async def _probe(pool: asyncpg.Pool) -> bool:
    """Whether the database answers. A pool too busy to lend a connection in time says
    nothing about the database (a loaded server is no unhealthy one): that counts as
    reachable."""
    try:
        conn = await pool.acquire(timeout=PROBE_TIMEOUT_SECONDS)
    except TimeoutError:
        return True
    except Exception as error:
        _log.info("database probe failed", error=repr(error))
        return False
    try:
        await conn.fetchval("SELECT 1", timeout=PROBE_TIMEOUT_SECONDS)
        return True
    except Exception as error:
        _log.info("database probe failed", error=repr(error))
        return False
    finally:
        with contextlib.suppress(Exception):  # a broken connection is terminated here
            await pool.release(conn)
