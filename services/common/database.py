"""The asyncpg pool, and the embedded PostgreSQL used when no database URL is set."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import re
import subprocess
import warnings
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg

from . import logs
from .config import Config
from .errors import Aborted, DomainError, ResourceExhausted, Unavailable
from .idempotency import CALL_CONNECTION
from .service import Unservable

_log = logs.get("cairn.database")


def embedded_url(data_dir: str) -> str:
    """Starts (or reuses) a private PostgreSQL under `<data_dir>/postgres`; returns its URL.

    `pgserver` stops it when the last process using it exits; the data stays, so the
    next start takes about a second.
    """
    pgdata = Path(data_dir).resolve() / "postgres"
    try:
        pgdata.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        # Said as a setting to change: bare, "[Errno 20] Not a directory" named neither
        # the setting nor the file, and `cairn migrate` took it for a bug of its own.
        raise Unservable(_unusable_data_dir(data_dir, error)) from error
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
        warnings.simplefilter("ignore")
        # Only the embedded mode needs pgserver.
        import pgserver

        from . import _embedded_postgres

        try:
            _embedded_postgres.start(pgdata)
            server = pgserver.get_server(pgdata, cleanup_mode="stop")
            # Registered after pgserver's, so run before it: a user killed since the
            # start does not keep the cluster up past this process's exit.
            atexit.register(_embedded_postgres.forget_gone_users, pgdata)
        except (AssertionError, subprocess.SubprocessError) as error:
            # Not kept half-made: a later get_server() in this process would return it.
            pgserver.PostgresServer._instances.pop(pgdata, None)
            raise Unservable(_not_started(pgdata, error)) from error
        except OSError as error:  # building the cluster aside, or setting one aside
            raise Unservable(_unusable_data_dir(data_dir, error)) from error
    _log.info("embedded postgres ready", data_dir=str(pgdata))
    return str(server.get_uri())


def _not_started(pgdata: Path, error: Exception) -> str:
    # pgserver's own messages run over many lines (a whole postmaster.pid, say).
    said = (str(error).strip().splitlines() or [""])[0][:200]
    return (
        f"the embedded PostgreSQL in {pgdata} did not start ({type(error).__name__}: "
        f"{said}); its log is {pgdata / 'log'}. If no start of this directory ever "
        "served (an older Cairn interrupted while creating it), nothing is stored in it: "
        "move it aside and start again"
    )


def _unusable_data_dir(data_dir: str, error: OSError) -> str:
    failed = f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")
    return (
        f"the data directory {data_dir} cannot hold the embedded PostgreSQL ({failed}): "
        "set CAIRN_DATA_DIR (--data-dir) to a directory this server can create and write "
        "in, or CAIRN_DATABASE_URL (--database-url) to a PostgreSQL of your own"
    )


# Longest wait to open one connection (the TCP and TLS handshakes, authentication).
CONNECT_TIMEOUT_SECONDS = 10.0
# Longest wait for the cancel request of a cancelled call's statement to be sent, over
# a connection of its own, before the call's connection is closed
# (_close_once_cancels_sent).
CANCEL_SEND_SECONDS = 2.0


def resolve_url(config: Config) -> str:
    return config.database_url or embedded_url(config.data_dir)


async def create_pool(url: str, config: Config) -> asyncpg.Pool:
    if _several_at_signs(url):
        # asyncpg ends the password at the first "@" and Cairn's messages read the host
        # after the last: "u:p@ss@db" looked up a host "ss@db" while the message named
        # "db", and the password it sent was "p".
        raise UnreadableUrl()
    pool = BoundedPool(
        url,
        min_size=config.db_pool_min_size,
        max_size=config.db_pool_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        # asyncpg's own bound is a minute: a server started against a database that
        # drops its packets sat silent that long before saying so.
        timeout=CONNECT_TIMEOUT_SECONDS,
        # Stores run their SQL through asyncpg's statement cache; keep it warm.
        statement_cache_size=1024,
        # Guards on every connection: no single statement, however a request is shaped,
        # runs or grows without bound (maintenance lifts the timeout: sql.unguarded()).
        server_settings={
            "statement_timeout": str(round(config.db_statement_timeout_seconds * 1000)),
            "work_mem": f"{config.db_work_mem_kib}kB",
            # A statement whose client is gone (its cancel request lost, the server's
            # process killed) ends within a second, not at its timeout.
            "client_connection_check_interval": "1000",
            # A lock is waited for within the statement's timeout, whatever the role's
            # lock_timeout: one a DBA set (common for ad-hoc sessions) failed writes that
            # merely waited for each other, a few milliseconds apart. Statements that want
            # a bound of their own set it (SET LOCAL lock_timeout).
            "lock_timeout": "0",
        },
        reset=_keep_session,
        init=_register_codecs,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
    )
    pool.acquire_timeout = config.db_acquire_timeout_seconds
    try:
        await pool
        if config.db_pool_min_size == 0:
            # Opened with no connection, a pool reads its URL at its first use, where
            # a ValueError would quote it: read now, by a connection of its own.
            await (await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_SECONDS)).close()
        return pool
    except BaseException as error:
        pool.terminate()
        # ClientConfigurationError is a ValueError too, whose messages name settings.
        names_settings = isinstance(error, asyncpg.ClientConfigurationError)
        if isinstance(error, ValueError) and not names_settings:
            raise UnreadableUrl() from None
        # One starting up or full is unreachable for now (unreachable()), not refused.
        if isinstance(error, asyncpg.PostgresError) and unreachable(error) is None:
            raise RefusedConnection(error, url) from error
        raise


def _several_at_signs(url: str) -> bool:
    """Whether the user and host part of a URL holds an unencoded "@" besides the one
    that ends it."""
    _, scheme_ends, rest = url.partition("://")
    return bool(scheme_ends) and re.split("[/?#]", rest, maxsplit=1)[0].count("@") > 1


class RefusedConnection(Exception):
    """PostgreSQL refused a connection as the pool set it up: a database or user it does
    not have, or a setting it does not know or take (one of the URL's parameters, say).
    The message is PostgreSQL's, which names the setting and no password."""

    def __init__(self, error: asyncpg.PostgresError, url: str) -> None:
        # On one line, as the commands end with one: str(error) puts each on its own.
        said = "; ".join(filter(None, (error.message, error.detail, error.hint)))
        if any(f'"{name}"' in error.message for name in _parameter_names(url)):
            said += (
                "; asyncpg hands each parameter of the URL it does not take itself "
                "(libpq's connect_timeout, say) to PostgreSQL as a setting: remove it "
                "from the URL"
            )
        super().__init__(said)


def _parameter_names(url: str) -> list[str]:
    try:
        return list(parse_qs(urlsplit(url).query))
    except ValueError:  # read by asyncpg, which reads more than urlsplit
        return []


def usable_connections(config: Config) -> int:
    """The pool's connections calls may hold, which the slots of writes and long reads
    are shares of: all but the one the key cache listens on for changes of keys
    (auth/cache.py), with keys checked and a pool of two or more."""
    listening = config.auth == "api_key" and config.db_pool_size >= 2
    return config.db_pool_size - int(listening)


class UnreadableUrl(ValueError):
    """A database URL asyncpg cannot read. Its own message quotes the piece it could not
    read, which is a piece of the password when that holds "/", "?" or "#" unencoded;
    so none of it is kept, in the message or as the cause."""

    def __init__(self) -> None:
        super().__init__(
            "not a PostgreSQL URL that can be read: percent-encode any of / ? # @ : in "
            "its user name and password, and write an IPv6 host in brackets, [::1]"
        )


async def connect_beside(pool: asyncpg.Pool, timeout: float) -> asyncpg.Connection:
    """A connection of its own, outside the pool, opened with the pool's arguments (URL,
    TLS, server settings) within timeout seconds: for probes, which the pool's calls
    must not hold up."""
    # asyncpg can set them (Pool.set_connect_args) but offers no way to read them.
    return await asyncpg.connect(
        *pool._connect_args, **{**pool._connect_kwargs, "timeout": timeout}
    )


# Longest wait for the pool's connections to say goodbye before they are dropped.
POOL_CLOSE_SECONDS = 5.0


async def close_pool(pool: asyncpg.Pool) -> None:
    """Closes the pool's connections, politely where the database answers; those that
    do not within POOL_CLOSE_SECONDS are dropped.

    asyncpg's own close has no bound: it waits for PostgreSQL to see each connection
    off, and to acknowledge any statement cancelled on it, which a partition never
    lets it do.
    """
    # Not wait_for: cancelling a close stuck on such a connection would wait for it too.
    closing = asyncio.ensure_future(pool.close())
    done, _ = await asyncio.wait({closing}, timeout=POOL_CLOSE_SECONDS)
    if not done:
        _log.warning("database connections dropped unclosed", after_seconds=POOL_CLOSE_SECONDS)
        pool.terminate()  # which ends the close, unless a connection is never released
        await asyncio.wait({closing}, timeout=POOL_CLOSE_SECONDS)


async def drop_connections(pool: asyncpg.Pool) -> None:
    """Drops every connection of the pool without a goodbye, those lent to calls too:
    the database, out of reach, would answer neither their statements nor a goodbye.

    A call waiting on one fails at once (ConnectionDoesNotExistError), as does one that
    uses its connection after ("connection is closed"): both answer
    DATABASE_UNAVAILABLE. Its transaction is rolled back, or committed if the COMMIT
    reached PostgreSQL first, so a retry under its request id applies it once. A
    connection being opened meanwhile is replaced before it is lent. Termination
    listeners run as for any lost connection."""
    await pool.expire_connections()
    # asyncpg offers no way to drop lent ones but Pool.terminate, which closes the pool.
    for holder in pool._holders:
        conn = holder._con
        if conn is None:
            continue
        if holder.is_idle():
            conn.terminate()
        else:
            # Not terminate(): that hands the connection back to the pool under its
            # call, whose next use of it then fails as a bug does ("released back to
            # the pool"), INTERNAL. Aborted, it stays the call's until released.
            conn._abort()
            # Told as a connection lost is told, which _abort() skips: the auth key
            # cache, which holds its LISTEN connection for good, went on listening
            # on a dead one.
            conn._call_termination_listeners()


class BoundedPool(asyncpg.Pool):
    """A pool whose waits for a connection end after `acquire_timeout` seconds with
    UNAVAILABLE (DATABASE_BUSY), long before a caller's deadline would. A caller that
    names its own timeout gets asyncpg's TimeoutError as usual."""

    acquire_timeout: float = 5.0
    # Set by the health watcher (watch.py) while its probes find the database out of
    # reach: a wait that times out then failed to connect, and says DATABASE_UNAVAILABLE.
    unreachable: bool = False

    def acquire(self, *, timeout: float | None = None) -> Any:
        shared = CALL_CONNECTION.get()
        if shared is not None:  # inside a write run once per request id: its transaction
            return _Shared(shared)
        if timeout is not None:
            return super().acquire(timeout=timeout)
        return _BoundedAcquire(super().acquire(timeout=self.acquire_timeout), self)


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


class _BoundedAcquire:
    """asyncpg's acquire context (awaitable, or `async with`), with its timeout told."""

    def __init__(self, inner: Any, pool: BoundedPool) -> None:
        self._inner = inner
        self._pool = pool

    async def __aenter__(self) -> asyncpg.Connection:
        # Not through _busy_on_timeout: a generator's context costs ~1 µs a call.
        try:
            return await self._inner.__aenter__()
        except TimeoutError:
            raise self._busy() from None

    async def __aexit__(self, *exc_info: Any) -> None:
        if isinstance(exc_info[1], asyncio.CancelledError):
            # Not lent again: cancelled as the answer to its statement's preparation
            # arrived, asyncpg leaves the statement unsynced, and PostgreSQL then keeps
            # its statement timeout running. The next message fails with that timeout
            # (a later caller's statement, or the Terminate of a close, which then
            # waits for ever).
            # The connection itself, not the pool's wrapper of it: a cancel request
            # that cannot be sent has asyncpg close the connection, which detaches the
            # wrapper, and closing through a detached wrapper raises InterfaceError.
            # None when the connection was lost (closed by the database) before.
            connection = self._inner.connection._con
            if connection is not None:
                if _close_once_cancels_sent(connection):
                    return  # its slot goes back to the pool as it closes
                connection.terminate()
        await self._inner.__aexit__(*exc_info)  # releases nothing once let go

    def __await__(self) -> Generator[Any, None, asyncpg.Connection]:
        return self._acquired().__await__()

    async def _acquired(self) -> asyncpg.Connection:
        with self._busy_on_timeout():
            return await self._inner

    @contextlib.contextmanager
    def _busy_on_timeout(self) -> Iterator[None]:
        try:
            yield
        except TimeoutError:
            raise self._busy() from None

    def _busy(self) -> Unavailable:
        if self._pool.unreachable:
            return _unavailable()
        return Unavailable(
            "DATABASE_BUSY",
            f"no database connection was free within {self._pool.acquire_timeout:g} s "
            "(CAIRN_DB_ACQUIRE_TIMEOUT_SECONDS); try again",
        )


def _close_once_cancels_sent(connection: asyncpg.Connection) -> bool:
    """Closes the connection, in a task of its own, once the cancels asyncpg requests
    for a statement cancelled as it ran are done, PostgreSQL having acknowledged them
    (CANCEL_SEND_SECONDS at most); False when none is under way. (In a transaction,
    asyncpg's rollback waits for them before this runs.) Closed first, the requests
    were dropped unsent, and PostgreSQL went on with the statement (a read, out of a
    transaction no rollback waited on) until its timeout, on a backend the pool had
    replaced: calls that timed out piled up backends past the pool's bound until the
    database refused everyone.
    Waited for by the call, they held up its cancellation (an enclosing timeout ran
    over by as much). asyncpg keeps them in a private set, which a later version may
    rename: then none is waited for, and the pool's client_connection_check_interval
    ends the statement within a second instead."""
    pending = [task for task in getattr(connection, "_cancellations", ()) if not task.done()]
    if not pending:
        return False

    async def close() -> None:
        try:
            await asyncio.wait(pending, timeout=CANCEL_SEND_SECONDS)
        finally:
            connection.terminate()  # nothing more if asyncpg closed it meanwhile

    closing = asyncio.ensure_future(close())
    _closing.add(closing)  # held: the loop keeps only a weak reference to a task
    closing.add_done_callback(_closing.discard)
    return True


_closing: set[asyncio.Future[None]] = set()


def domain_error(exc: BaseException) -> DomainError | None:
    """The error to answer for a database failure that is no bug: the database cannot
    be reached or is out of disk or memory, a statement ran out of its time, a lock
    was not granted in time, or transactions conflicted."""
    if isinstance(exc, asyncpg.exceptions.QueryCanceledError):
        return statement_timeout()
    if isinstance(exc, _CONFLICTS):
        return Aborted(
            "TRANSACTION_CONFLICT",
            "the database rolled this call back in a conflict with another; nothing of it "
            "was applied: call again",
        )
    if isinstance(exc, asyncpg.exceptions.LockNotAvailableError):
        # A lock_timeout the pool's own setting did not reach (a pooler's, say): the
        # lock waited for is someone else's, so the call may well pass when sent again.
        return Unavailable(
            "DATABASE_BUSY",
            "a lock the call needed was not granted within the database's lock_timeout; "
            "nothing of the call was applied: call again",
        )
    if isinstance(exc, asyncpg.exceptions.ReadOnlySQLTransactionError):
        # A standby, or a primary demoted in a failover: writes come back once the
        # connections reach the new primary (the health watcher drops these).
        return Unavailable(
            "DATABASE_READ_ONLY",
            "the database takes no writes at the moment (a failover?); nothing of the "
            "call was applied: call again",
        )
    if isinstance(exc, asyncpg.InterfaceError) and _POOL_CLOSING.search(str(exc)):
        # Work that outlived the server's stop (a byte-endpoint transfer past the grace
        # period): the client calls again, on this server's successor.
        return Unavailable("SHUTTING_DOWN", "the server is stopping; call again")
    if isinstance(exc, asyncpg.exceptions.InsufficientResourcesError):
        return unreachable(exc) or Unavailable(  # many connections are unreachable's
            "DATABASE_OUT_OF_RESOURCES",
            f"the database ran out of room ({type(exc).__name__}); nothing of the call was "
            "applied: call again once it has some",
        )
    return unreachable(exc)


def statement_timeout() -> ResourceExhausted:
    return ResourceExhausted(
        "STATEMENT_TIMEOUT",
        "the request needed more database time than the server allows "
        "(CAIRN_DB_STATEMENT_TIMEOUT_SECONDS: for a statement, and for the sorts of one "
        "metric history read together); narrow it: a smaller page, a more selective "
        "filter, fewer runs; or, when the data it reads was being changed at length "
        "(a migration, a maintenance lock), call again later",
    )


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
        return _unavailable()
    return None


def _unavailable() -> Unavailable:
    return Unavailable(
        "DATABASE_UNAVAILABLE", "the database cannot be reached at the moment; try again"
    )


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
_POOL_CLOSING = re.compile(r"\bpool is clos(ing|ed)\b")
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
