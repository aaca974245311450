"""Health that follows the database: NOT_SERVING while PostgreSQL cannot be reached or
takes no writes (a standby, or a primary demoted in a failover).

A load balancer or Kubernetes then stops sending calls that could only fail. One slow
answer is not an outage: the state changes after two probes in a row disagree with it.

The probes go over a connection of their own, outside the pool. Through the pool, a
wait for a connection that times out says nothing: the pool may be busy with calls (no
outage), or every connection it opens may hang because the database does not answer (a
network partition, a black-holed route), which is one. Over its own connection, a probe
that cannot connect or get an answer within its time means that the database cannot be
reached, and calls are not in its way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg

from . import logs
from .database import BoundedPool, connect_beside, drop_connections

PROBES_TO_CHANGE = 2
_log = logs.get("cairn.health")


async def watch_database(
    pool: asyncpg.Pool,
    report: Callable[[bool], Awaitable[None]],
    interval: float,
    timeout: float,
) -> None:
    """Probes the database every interval seconds until cancelled, with the pool's
    connection settings, each probe given timeout seconds to connect and again to be
    answered; calls report(reachable) when PROBES_TO_CHANGE probes in a row say the
    opposite of what was last reported, and drops the pool's connections when that is
    unreachable, those calls wait on too, and again at each probe it does not answer
    while so (a read-only database counts as one: its connections, to a demoted
    primary, are replaced too, once)."""
    probe = _Probe(pool, timeout)
    reachable, disagreeing = True, 0
    try:
        while True:
            await asyncio.sleep(interval)
            if await probe.answers() == reachable:
                disagreeing = 0
                if not reachable and probe.silent:
                    # Still silent: connections calls opened since the last probe (it
                    # answered a moment, a partition healed and back) would hang as
                    # those dropped when it went out of reach did. Not for a database
                    # that answers but takes no writes: its reads go on.
                    await drop_connections(pool)
                continue
            disagreeing += 1
            if disagreeing >= PROBES_TO_CHANGE:
                reachable, disagreeing = not reachable, 0
                _log.warning("database reachable" if reachable else "database unreachable")
                if isinstance(pool, BoundedPool):
                    pool.unreachable = not reachable
                if not reachable:
                    # A connection the pool holds may never hear from the database
                    # again (a partition drops its packets, no reset comes): each is
                    # dropped, so that a call waiting on one answers UNAVAILABLE now
                    # rather than when TCP gives up (~15 min), and a call after waits
                    # for a new one, in bounded time.
                    await drop_connections(pool)
                await report(reachable)
    finally:
        probe.close()


# Whether a new transaction of this session may write: not on a standby, nor on a
# server set read-only (what a demoted primary's connections see).
_WRITABLE = "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'"


class _Probe:
    """`_WRITABLE` over one connection kept open between probes (no new PostgreSQL
    backend a second), opened again after any failure or read-only answer."""

    def __init__(self, pool: asyncpg.Pool, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout
        self._conn: asyncpg.Connection | None = None
        self.silent = False  # whether the last probe got no answer at all

    async def answers(self) -> bool:
        """Whether the database answered within the timeout (to connect, and again to
        the query), and takes writes."""
        self.silent = False
        try:
            if self._conn is None:
                self._conn = await self._connect()
            if await self._conn.fetchval(_WRITABLE, timeout=self._timeout):
                return True
            # Every call that writes fails meanwhile; the next probe connects afresh,
            # to the new primary once the failover's address names it.
            _log.info("database probe found it takes no writes")
            self.close()
            return False
        except asyncpg.TooManyConnectionsError:
            # It answered: every connection it allows is taken, the pools' of the
            # servers most likely, which serve calls. A busy database is no outage.
            return True
        except Exception as error:  # refused, timed out, broken: all say unreachable
            _log.info("database probe failed", error=repr(error))
            self.close()
            self.silent = True
            return False

    async def _connect(self) -> asyncpg.Connection:
        return await connect_beside(self._pool, self._timeout)

    def close(self) -> None:
        """Drops the connection without a goodbye, which a database that does not
        answer would never acknowledge."""
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
