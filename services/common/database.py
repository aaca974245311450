"""The asyncpg pool, and the embedded PostgreSQL used when no database URL is set."""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import asyncpg

from . import logs
from .config import Config
from .errors import Aborted, DomainError, ResourceExhausted, Unavailable
from .idempotency import CALL_CONNECTION

_log = logs.get("cairn.database")


def embedded_url(data_dir: str) -> str:
    """Starts (or reuses) a private PostgreSQL under `<data_dir>/postgres`; returns its URL.

    `pgserver` stops it when the last process using it exits; the data stays, so the
    next start takes about a second.
    """
    import pgserver  # Only the embedded mode needs it.

    pgdata = Path(data_dir).resolve() / "postgres"
    pgdata.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
        warnings.simplefilter("ignore")
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
    _log.info("embedded postgres ready", data_dir=str(pgdata))
    return str(server.get_uri())


def resolve_url(config: Config) -> str:
    return config.database_url or embedded_url(config.data_dir)


async def create_pool(url: str, config: Config) -> asyncpg.Pool:
    pool = BoundedPool(
        url,
        min_size=config.db_pool_min_size,
        max_size=config.db_pool_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        # Stores run their SQL through asyncpg's statement cache; keep it warm.
        statement_cache_size=1024,
        # Guards on every connection: no single statement, however a request is shaped,
        # runs or grows without bound (maintenance lifts the timeout: sql.unguarded()).
        server_settings={
            "statement_timeout": str(round(config.db_statement_timeout_seconds * 1000)),
            "work_mem": f"{config.db_work_mem_kib}kB",
        },
        reset=_keep_session,
        init=_register_codecs,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
    )
    pool.acquire_timeout = config.db_acquire_timeout_seconds
    return await pool


class BoundedPool(asyncpg.Pool):
    """A pool whose waits for a connection end after `acquire_timeout` seconds with
    UNAVAILABLE (DATABASE_BUSY), long before a caller's deadline would. A caller that
    names its own timeout gets asyncpg's TimeoutError as usual.

    It also keeps one connection ready between calls (`ready`): asyncpg's acquire and
    release arm and cancel three timers and run the release in a task of its own (two
    turns of the event loop), 0.2 ms of each LogMetric's 2.0 ms measured in a served
    instance. A connection an `async with pool.acquire()` block leaves without an error,
    out of any transaction and still open is kept out of asyncpg's pool for the next
    acquire, unless someone waits for a connection then or one is kept already; any
    other is released through asyncpg, which rolls back, waits out a cancelled query or
    closes it. Every `REFRESH_EVERY` keeps it goes back through asyncpg once, whose
    release checks `max_queries` and an expired generation.
    """

    acquire_timeout: float = 5.0
    ready: asyncpg.Connection | None = None
    REFRESH_EVERY = 1000
    waiting = 0  # acquires waiting for asyncpg to lend a connection
    _kept = 0
    _ready_since = 0.0  # time.monotonic() when `ready` was kept
    _keeping = True  # off once the pool closes

    def acquire(self, *, timeout: float | None = None) -> Any:
        shared = CALL_CONNECTION.get()
        if shared is not None:  # inside a write run once per request id: its transaction
            return _Shared(shared)
        return _Acquire(self, timeout)

    def keep(self, conn: asyncpg.Connection) -> bool:
        """Keeps conn ready for the next acquire if it may be; returns whether it was.

        What asyncpg's release would find wrong with conn keeps it from being kept: a
        listener added to it, a query being cancelled on it, an expired generation. As
        a release does, keeping retires the caller's reference to it (the next use
        raises InterfaceError) and lends the next caller a reference of its own, so a
        task that held on to it can never run on another call's connection."""
        self._kept += 1
        if (
            self.ready is not None
            or self.waiting
            or not self._keeping
            or self._kept % self.REFRESH_EVERY == 0
            or not _settled(conn)
            or not _unburdened(conn, self._generation)
        ):
            return False
        self.ready = _lent_anew(conn)
        self._ready_since = time.monotonic()
        return True

    async def take_ready(self) -> asyncpg.Connection | None:
        """The connection kept ready, if any and still usable. One kept idle longer than
        the pool lets its idle connections live is closed: a firewall may have dropped
        it without a word, and asyncpg would have closed it by now."""
        conn, self.ready = self.ready, None
        if conn is None:
            return None
        idle = time.monotonic() - self._ready_since
        if _settled(conn) and idle < self._max_inactive_connection_lifetime:
            return conn
        if _settled(conn):
            await conn.close()  # asyncpg then frees its place in the pool
        else:
            await super().release(conn)  # broke while kept: asyncpg closes it
        return None

    async def lend(self, timeout: float | None) -> asyncpg.Connection:
        """The connection kept ready, else one asyncpg lends within timeout."""
        conn = await self.take_ready()
        if conn is not None:
            return conn
        self.waiting += 1
        try:
            if timeout is not None:
                return await super().acquire(timeout=timeout)
            with _busy_on_timeout(self.acquire_timeout):
                return await super().acquire(timeout=self.acquire_timeout)
        finally:
            self.waiting -= 1

    def get_idle_size(self) -> int:
        return super().get_idle_size() + (self.ready is not None)

    async def expire_connections(self) -> None:
        await super().expire_connections()
        if (conn := await self.take_ready()) is not None:
            await super().release(conn)  # of the old generation: asyncpg closes it

    async def close(self) -> None:
        self._keeping = False
        if (conn := await self.take_ready()) is not None:
            await super().release(conn)
        await super().close()

    def terminate(self) -> None:
        self._keeping, self.ready = False, None
        super().terminate()


def _unburdened(conn: asyncpg.Connection, generation: int) -> bool:
    """Whether conn carries nothing asyncpg's release would deal with: listeners (a
    release removes them), a query being cancelled (a release waits it out), a
    generation expired by expire_connections (a release closes it)."""
    raw = conn._con
    return (
        not (raw._listeners or raw._log_listeners)
        and not raw._protocol._is_cancelling()
        and conn._holder._generation == generation
    )


def _lent_anew(conn: asyncpg.Connection) -> asyncpg.Connection:
    """conn's connection under a new reference, as asyncpg's acquire makes one; the old
    one is detached as asyncpg's release detaches it."""
    holder = conn._holder
    holder._proxy = asyncpg.pool.PoolConnectionProxy(holder, conn._detach())
    return holder._proxy


def _settled(conn: asyncpg.Connection) -> bool:
    """Whether conn is open and out of any transaction (False once asyncpg took it
    back after it broke, which detaches it)."""
    try:
        return not (conn.is_closed() or conn.is_in_transaction())
    except asyncpg.InterfaceError:
        return False


class _Acquire:
    """What BoundedPool.acquire returns: awaitable (release the connection with
    pool.release), or an `async with` context that gives its connection back to the
    pool, kept ready when it may be."""

    def __init__(self, pool: BoundedPool, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._conn: asyncpg.Connection | None = None

    def __await__(self) -> Generator[Any, None, asyncpg.Connection]:
        return self._pool.lend(self._timeout).__await__()

    async def __aenter__(self) -> asyncpg.Connection:
        self._conn = await self._pool.lend(self._timeout)
        return self._conn

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: Any) -> None:
        conn, self._conn = self._conn, None
        if exc_type is None and self._pool.keep(conn):
            return
        await self._pool.release(conn)


class _Shared:
    """The connection of the call, lent to a store without being released after."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def __aenter__(self) -> asyncpg.Connection:
        return self._conn

    async def __aexit__(self, *exc_info: Any) -> None:
        return None

    def __await__(self) -> Generator[Any, None, asyncpg.Connection]:
        return self.__aenter__().__await__()


@contextlib.contextmanager
def _busy_on_timeout(seconds: float) -> Iterator[None]:
    try:
        yield
    except TimeoutError:
        raise Unavailable(
            "DATABASE_BUSY",
            f"no database connection was free within {seconds:g} s "
            "(CAIRN_DB_ACQUIRE_TIMEOUT_SECONDS); try again",
        ) from None


def domain_error(exc: BaseException) -> DomainError | None:
    """The error to answer for a database failure that is no bug: the database cannot
    be reached, a statement ran out of its time, or transactions conflicted."""
    if isinstance(exc, asyncpg.exceptions.QueryCanceledError):
        return ResourceExhausted(
            "STATEMENT_TIMEOUT",
            "the request needed a database statement longer than the server allows "
            "(CAIRN_DB_STATEMENT_TIMEOUT_SECONDS); narrow it: a smaller page, a more "
            "selective filter",
        )
    if isinstance(exc, _CONFLICTS):
        return Aborted(
            "TRANSACTION_CONFLICT",
            "the database rolled this call back in a conflict with another; nothing of it "
            "was applied: call again",
        )
    return unreachable(exc)


# What PostgreSQL rolls a transaction back for when transactions cross (SQLSTATE 40P01,
# 40001): the call applied nothing, so it can simply be made again.
_CONFLICTS = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)


def unreachable(exc: BaseException) -> Unavailable | None:
    """The error to answer when exc says the database cannot be reached (down,
    restarting, or the connection broke), rather than that the request was wrong."""
    if (
        (isinstance(exc, OSError) and _raised_in_asyncpg(exc))
        or isinstance(exc, _UNREACHABLE)
        or (isinstance(exc, asyncpg.InterfaceError) and _CLOSED in str(exc))
        # A connection whose last query an outage cut off, handed out again before its
        # cleanup ended; releasing it after this error terminates it.
        or (isinstance(exc, asyncpg.InternalClientError) and _BUSY in str(exc))
    ):
        return Unavailable(
            "DATABASE_UNAVAILABLE", "the database cannot be reached at the moment; try again"
        )
    return None


def _raised_in_asyncpg(exc: OSError) -> bool:
    """Whether an OSError (refused, reset, no route) came from talking to PostgreSQL,
    not from a file or another service."""
    frame = exc.__traceback__
    while frame is not None:
        if "asyncpg" in frame.tb_frame.f_code.co_filename:
            return True
        frame = frame.tb_next
    return False


_UNREACHABLE = (
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08: the connection failed or broke
    asyncpg.exceptions.CannotConnectNowError,  # starting up or shutting down
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
)
_CLOSED = "connection is closed"
_BUSY = "another operation"


async def _register_codecs(conn: asyncpg.Connection) -> None:
    """jsonb in and out as Python values rather than JSON text."""
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skips asyncpg's reset round trip (RESET ALL, UNLISTEN, CLOSE ALL) on release.

    Safe because no store leaves session state behind: settings are SET LOCAL,
    cursors live inside transactions, and nothing LISTENs or holds advisory locks
    beyond a call (asyncpg still rolls back a transaction left open).
    """
