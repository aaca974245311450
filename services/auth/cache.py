"""Key checks remembered for a moment, forgotten whenever auth data changes anywhere.

Looking a key up costs a database round trip on every call. A check is kept for at
most `max_age` seconds, and only while this process listens on the channel that a
trigger on every auth table notifies when a change commits (migration 0002), from
whichever server, command or hand-typed SQL made it. A server that makes a change
forgets at once, before it answers; others forget when the notification arrives,
milliseconds later. Expiry is compared on every call, so it is exact either way. A
listener in use is asked every CONFIRM_SECONDS whether it still hears: a connection
gone silent (a NAT or firewall dropping an idle flow without a reset) is never told it
closed, and its server went on caching with no change reaching it, until it restarted.
Everything is forgotten at once, not the changed key alone: the keys a revocation
reaches through their parents (store.revoke_key) are forgotten with no list of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from ..common import logs
from .store import KeyCheck

CHANNEL = "cairn_auth_changed"
RETRY_SECONDS = 5.0
LISTEN_TIMEOUT_SECONDS = 0.5
CONFIRM_SECONDS = 1.0
CONFIRM_TIMEOUT_SECONDS = 5.0  # longer than the event loop of a busy server stalls
_log = logs.get("cairn.auth")


class KeyCache:
    def __init__(
        self,
        pool: asyncpg.Pool,
        max_age: float = 2.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._max_age = max_age
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[tuple[str, str | None], tuple[float, KeyCheck]] = {}
        # Bumped by every change: a check read before a change is not stored after it.
        self.generation = 0
        self._listener: asyncpg.Connection | None = None
        self._confirmed_at = 0.0  # when the listener last answered
        self._confirming: asyncio.Task[None] | None = None
        self._next_attempt = 0.0
        self._users = 0  # gates using the cache; the last one to close stops listening

    @property
    def listening(self) -> bool:
        """Whether changes reach the cache, so it may serve checks at all."""
        return self._listener is not None and _open(self._listener)

    def get(self, prefix: str, project: str | None) -> KeyCheck | None:
        entry = self._entries.get((prefix, project))
        if entry is None or not self.listening:
            return None
        stored_at, check = entry
        if self._clock() - stored_at >= self._max_age:
            del self._entries[(prefix, project)]
            return None
        return check

    def put(self, prefix: str, project: str | None, check: KeyCheck, generation: int) -> None:
        if not self.listening or generation != self.generation:
            return
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[(prefix, project)] = (self._clock(), check)

    def forget(self, *_: Any) -> None:
        """Drops every check (also the listener callback of the change channel)."""
        self.generation += 1
        self._entries.clear()

    async def listen(self) -> None:
        """Starts listening if not yet (or again, some seconds after losing it)."""
        if self._listener is not None:
            if self.listening:
                self._confirm_when_due(self._listener)
                return
            self._lost(self._listener)  # closed, and not told (yet)
        if self._clock() < self._next_attempt:
            return
        self._next_attempt = self._clock() + RETRY_SECONDS
        if self._pool.get_max_size() < 2:
            return  # the listener would hold the only connection: never cache
        try:
            # Not worth holding up the call that asked: a busy pool means try later.
            connection = await self._pool.acquire(timeout=LISTEN_TIMEOUT_SECONDS)
        except TimeoutError:
            return
        try:
            await connection.add_listener(CHANNEL, self.forget)
        except (OSError, asyncpg.PostgresError):
            await self._pool.release(connection)
            _log.warning("not caching key checks: cannot listen for auth changes")
            return
        connection.add_termination_listener(self._lost)
        self.forget()
        self._listener = connection
        self._confirmed_at = self._clock()

    def _confirm_when_due(self, listener: asyncpg.Connection) -> None:
        if self._confirming is None and self._clock() - self._confirmed_at >= CONFIRM_SECONDS:
            # In a context of its own: a loss it finds is no matter of the call that
            # happened to start it, whose request id its log line carried.
            self._confirming = asyncio.create_task(
                self._confirm(listener), context=contextvars.Context()
            )

    async def _confirm(self, listener: asyncpg.Connection) -> None:
        """Takes the listener for lost unless its connection answers a query in time;
        notifications come on the same stream, before the answer."""
        try:
            async with asyncio.timeout(CONFIRM_TIMEOUT_SECONDS):
                await listener.fetchval("SELECT 1")
            self._confirmed_at = self._clock()
        except Exception as error:  # no answer in time, the connection broken: not listening
            self._lost(listener, error)
        finally:
            self._confirming = None

    def attach(self) -> None:
        self._users += 1

    async def close(self) -> None:
        """Called by each gate that attached; the last one stops the listening.

        The listener is dropped, not sent UNLISTEN and released: the pool closes next
        (the gates close at shutdown), and a database that does not answer, early in a
        partition the health watcher has yet to find, would hold the UNLISTEN, and
        the shutdown with it, until the partition heals. Its slot goes back to the
        pool at once, so the pool's close does not wait for it either."""
        self._users = max(0, self._users - 1)
        if self._users:
            return
        listener, self._listener = self._listener, None
        self._next_attempt = 0.0
        if self._confirming is not None:
            self._confirming.cancel()
        self.forget()
        if listener is not None:
            _give_back(listener)  # _lost, told, ignores it: no loss to report

    def _lost(self, connection: asyncpg.Connection, error: BaseException | None = None) -> None:
        if connection is not self._listener:
            return  # told before, or after the cache stopped listening
        self._listener = None
        self.forget()
        _give_back(connection)
        _log.warning(
            "lost the auth change listener; key checks uncached until it is back",
            error=None if error is None else repr(error),  # what its check met, if one did
        )


def _open(connection: asyncpg.Connection) -> bool:
    try:
        return not connection.is_closed()
    except asyncpg.InterfaceError:
        # Given back to the pool by asyncpg as the connection closed, before its
        # termination listener (_lost) has run.
        return False


def _give_back(connection: asyncpg.Connection) -> None:
    """Returns a closed listener's slot to the pool. A connection dropped while lent
    (database.drop_connections) stays lent until then; asyncpg gives back one it saw
    close itself."""
    with contextlib.suppress(asyncpg.InterfaceError):  # given back already
        connection.terminate()


# By id of the pool, which the cache holds, so an id is never reused while listed. A
# server process has one pool for its life; only tests make more.
_CACHES: dict[int, KeyCache] = {}


def key_cache(pool: asyncpg.Pool) -> KeyCache:
    """The one cache of a pool, shared by the gate (which reads it) and the servicer
    (which makes it forget when it changes keys or roles)."""
    cache = _CACHES.get(id(pool))
    if cache is None:
        cache = _CACHES[id(pool)] = KeyCache(pool)
    return cache
