"""Versioned SQL migrations, one PostgreSQL schema per service.

A service keeps files named `NNNN_description.sql` in its `migrations/` folder. Each
pending file runs in its own transaction, and the version is recorded in
`<schema>.schema_migrations` in that same transaction, so a failed file leaves no trace.
The whole run holds a PostgreSQL advisory lock, so replicas that start together
apply each file exactly once while the others wait.

A server checks the ledgers against its files before it serves (`check`): it refuses a
database that lacks any of them, or applied another migration than one of them at its
version (by name: the ledger keeps each file's), and warns of versions only a newer
release knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

from . import logs, sql
from .service import Unservable

if TYPE_CHECKING:
    from .service import ServiceSpec

# Any constant works, as long as every Cairn process uses the same one.
ADVISORY_LOCK_KEY = 0x43_41_49_52_4E  # "CAIRN"
_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_log = logs.get("cairn.migrations")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def discover(folder: Path) -> list[Migration]:
    """The migrations of a folder in version order; rejects gaps and odd names."""
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file name {path.name!r} is not NNNN_description.sql")
        found.append(Migration(int(match.group(1)), path.stem, path.read_text()))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"migrations in {folder} must be numbered 1, 2, 3 ...: {versions}")
    return found


# How long the session of a migration run may sit idle, inside a transaction or out,
# before PostgreSQL ends it. A run never waits on its client between statements, so
# only a migrator that froze or lost its node (PostgreSQL sees no closed socket) is
# idle that long, holding the lock every replica waits for and the locks of the tables
# it was changing, which fail the writes of the servers serving meanwhile.
STALLED_AFTER_SECONDS = 60
_holder: contextvars.ContextVar[asyncpg.Connection | None] = contextvars.ContextVar(
    "migrations_holder", default=None
)


def _session_settings() -> dict[str, int]:
    """The settings of a run's session (in ms), RESET when it ends: neither waiting for
    another replica's migrations nor a migration itself has the pool's statement
    timeout (an index may take minutes to build), and a migrator killed while a
    statement waits or runs is noticed within a second, not at the statement's end."""
    stalled = STALLED_AFTER_SECONDS * 1000
    return {
        "statement_timeout": 0,
        "idle_in_transaction_session_timeout": stalled,
        "idle_session_timeout": stalled,
        "client_connection_check_interval": 1000,
    }


@contextlib.asynccontextmanager
async def held(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """The migrations' lock, for a run of one schema or several: other runs wait, and so
    does a server's check (`check`) until the whole run ends, not its first schema.
    Taken again inside (by `apply`), it is held until the outermost release."""
    if _holder.get() is conn:
        yield
        return
    settings = _session_settings()
    await conn.execute("; ".join(f"SET {name} = {value}" for name, value in settings.items()))
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", ADVISORY_LOCK_KEY):
        _log.info("waiting for the migrations another process is applying")
        await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    holding = _holder.set(conn)
    try:
        yield
    except BaseException:
        _holder.reset(holding)
        await _give_up_after_failure(conn, settings)
        raise
    _holder.reset(holding)
    await _give_up(conn, settings)


async def _give_up(conn: asyncpg.Connection, settings: dict[str, int]) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    await conn.execute("; ".join(f"RESET {name}" for name in settings))


async def _give_up_after_failure(conn: asyncpg.Connection, settings: dict[str, int]) -> None:
    """Gives the lock up after a run failed, without hiding why it failed: on a lost
    connection (PostgreSQL ended the session, or it broke) giving up fails in turn,
    and its error ("connection has been released back to the pool") would replace the
    one that says the connection was lost. The session is then ended, and the lock
    with it."""
    try:
        await _give_up(conn, settings)
    except Exception:
        with contextlib.suppress(asyncpg.InterfaceError):  # already closed and released
            conn.terminate()


# Probes of the database in a row that get no answer before a run is given up on.
PROBES_TO_GIVE_UP = 2


@contextlib.asynccontextmanager
async def watched(
    conn: asyncpg.Connection,
    connect: Callable[[], Awaitable[asyncpg.Connection]],
    interval: float,
    timeout: float,
) -> AsyncIterator[None]:
    """Gives a run on conn up when its database stops answering, so that it ends.

    A run has no statement timeout, and its connection no keepalive: one whose database
    went silent (a network partition, a black-holed route: nothing answers, nothing
    refuses) waited for ever, long after PostgreSQL had rolled its migration back. A
    probe every interval seconds, over connections of its own opened by connect, asks
    whether the run's session is still there; when PROBES_TO_GIVE_UP in a row get no
    answer within timeout seconds (to connect, then to the query), or the session is
    gone, conn is ended, and the run fails with ConnectionDoesNotExistError saying why.
    What it had not committed is rolled back once PostgreSQL notices."""
    watchdog = asyncio.ensure_future(_watch(conn, connect, interval, timeout))
    try:
        yield
    except Exception as error:
        if watchdog.done() and not watchdog.cancelled():
            raise asyncpg.ConnectionDoesNotExistError(watchdog.result()) from error
        raise
    finally:
        watchdog.cancel()
        await asyncio.gather(watchdog, return_exceptions=True)


async def _watch(
    conn: asyncpg.Connection,
    connect: Callable[[], Awaitable[asyncpg.Connection]],
    interval: float,
    timeout: float,
) -> str:
    """Probes until the run's session is found gone or PROBES_TO_GIVE_UP probes in a
    row are unanswered; then ends conn and returns why."""
    session = conn.get_server_pid()
    probe: asyncpg.Connection | None = None
    unanswered = 0
    try:
        while unanswered < PROBES_TO_GIVE_UP:
            await asyncio.sleep(interval)
            try:
                probe = probe or await connect()
                there = await probe.fetchval(_SESSION_THERE, session, timeout=timeout)
            except asyncpg.TooManyConnectionsError:
                unanswered = 0  # it answered: every connection it allows is taken
                continue
            except Exception as error:  # refused, timed out, broken: all unanswered
                _log.info("database probe failed during migrations", error=repr(error))
                if probe is not None:
                    probe.terminate()  # without a goodbye, which would not be answered
                probe, unanswered = None, unanswered + 1
                continue
            if not there:
                why = "PostgreSQL ended the migrations' session"
                break
            unanswered = 0
        else:
            why = (
                f"the database answered none of {PROBES_TO_GIVE_UP} probes in a row within "
                f"{timeout:g} s (CAIRN_HEALTH_PROBE_TIMEOUT_SECONDS) during migrations"
            )
        _log.warning("migrations given up", reason=why)
        conn.terminate()
        return why
    finally:
        if probe is not None:
            probe.terminate()


_SESSION_THERE = "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)"


async def apply(conn: asyncpg.Connection, schema: str, migrations: list[Migration]) -> list[int]:
    """Applies the pending migrations of one schema; returns the versions applied."""
    async with held(conn):
        await _ensure_ledger(conn, schema)
        done = await _ledger(conn, schema)
        _refuse_other_files([_state(schema, migrations, done)])
        applied = []
        for migration in migrations:
            if migration.version in done:
                continue
            await _apply_waiting_briefly(conn, schema, migration)
            _log.info("migration applied", schema=schema, migration=migration.name)
            applied.append(migration.version)
        return applied


# How long a migration waits for a lock on a table it changes before it is rolled back
# and tried again. PostgreSQL grants a table's locks in order, so every call that uses
# the table queues behind a waiting ALTER TABLE: behind a long read, an unbounded wait
# stalled every call of the service for as long as the read lasted.
LOCK_WAIT_SECONDS = 3.0
# Tries of a migration, each after a pause that doubles from LOCK_PAUSE_SECONDS up to
# LOCK_PAUSE_MAX_SECONDS (below STALLED_AFTER_SECONDS, past which PostgreSQL ends an idle
# session): about three minutes in all before the run fails.
LOCK_TRIES = 10
LOCK_PAUSE_SECONDS = 1.0
LOCK_PAUSE_MAX_SECONDS = 30.0


async def _apply_waiting_briefly(
    conn: asyncpg.Connection, schema: str, migration: Migration
) -> None:
    """Applies one migration, and records it, in one transaction that waits at most
    LOCK_WAIT_SECONDS for each lock; tried again after a pause (logged) while a lock is
    not granted, LOCK_TRIES times in all.

    Raises:
        Unservable: the last try too found a lock it needs held, naming the migration.
    """
    for attempt in range(1, LOCK_TRIES + 1):
        try:
            async with _transaction(conn):
                await conn.execute(f"SET LOCAL lock_timeout = {round(LOCK_WAIT_SECONDS * 1000)}")
                await conn.execute(f'SET LOCAL search_path TO "{schema}"')
                await conn.execute(migration.sql)
                await conn.execute(
                    f'INSERT INTO "{schema}".schema_migrations (version, name) VALUES ($1, $2)',
                    migration.version,
                    migration.name,
                )
            return
        except asyncpg.LockNotAvailableError:
            if attempt == LOCK_TRIES:
                break
            pause = min(LOCK_PAUSE_SECONDS * 2 ** (attempt - 1), LOCK_PAUSE_MAX_SECONDS)
            _log.warning(
                "migration waited for a lock; trying again",
                schema=schema,
                migration=migration.name,
                attempt=attempt,
                waited_seconds=LOCK_WAIT_SECONDS,
                pause_seconds=pause,
            )
            await asyncio.sleep(pause)
    raise Unservable(
        f"migration {migration.name} of the {schema} schema waited {LOCK_TRIES} times for "
        f"{LOCK_WAIT_SECONDS:g} s for a lock on a table it changes, held by other sessions "
        "(a long query or transaction: see pg_stat_activity); nothing of it was applied. "
        "End them, or wait for them, and run `cairn migrate` again"
    )


@contextlib.asynccontextmanager
async def _transaction(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """A transaction on conn that, on a connection lost in it, fails with the error
    that says so: asyncpg's own context replaced it with its failure to roll back
    ("the underlying connection is closed"). PostgreSQL rolls such a one back itself."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        yield
    except BaseException:
        with contextlib.suppress(asyncpg.InterfaceError):  # the connection is gone
            await transaction.rollback()
        raise
    await transaction.commit()


async def applied_versions(conn: asyncpg.Connection, schema: str) -> set[int]:
    rows = await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations')
    return {row["version"] for row in rows}


async def _ensure_ledger(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    await conn.execute(
        f"""CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )"""
    )


@dataclass(frozen=True)
class SchemaState:
    """How a schema's ledger compares with the migrations this server has."""

    schema: str
    missing: list[Migration]  # files of this server the database has not applied
    # Files of this server whose version the database applied under another name (a
    # different migration, of another build), with that name.
    other: list[tuple[Migration, str]]
    unknown: list[str]  # versions applied that no file of this server is (a newer release)


async def check(pool: asyncpg.Pool, services: Sequence[ServiceSpec]) -> None:
    """Refuses to serve a database that lacks any of the services' migrations, and warns
    of migrations applied that this server does not know (a newer release's).

    Raises:
        Unservable: a schema lacks migrations, naming them and `cairn migrate`; or
            applied another migration than a file of this server at its version.
    """
    states = await compare(pool, services)
    _refuse_other_files(states)
    for state in states:
        if state.unknown:
            _log.warning(
                "the database holds migrations newer than this server",
                schema=state.schema,
                unknown=state.unknown,
                hint="a newer release migrated it: serve this one only while rolling that "
                "one out or back (docs/deploy.md, Upgrades)",
            )
    behind = [state for state in states if state.missing]
    if behind:
        raise Unservable(
            f"the database lacks migrations this server needs: {'; '.join(map(_lacks, behind))}. "
            "Run `cairn migrate` of this release (on Kubernetes, the cairn-migrate Job; "
            'docs/deploy.md, "Upgrades") or serve with CAIRN_MIGRATE_ON_START=true'
        )


async def compare(pool: asyncpg.Pool, services: Sequence[ServiceSpec]) -> list[SchemaState]:
    """Each service's schema against its migration files, read once no migration run is
    under way: one that another process is applying now is waited for, not taken for
    missing (a pod started beside the migrate Job, replicas starting together)."""
    files = {spec.schema: discover(spec.migrations_dir) for spec in services}
    async with pool.acquire() as conn, conn.transaction():
        # apply() holds the lock exclusively; shared holders read together. Like apply(),
        # without the pool's statement timeout: a migration may build an index for minutes.
        await sql.unguarded(conn)
        if not await conn.fetchval(
            "SELECT pg_try_advisory_xact_lock_shared($1)", ADVISORY_LOCK_KEY
        ):
            _log.info("waiting for the migrations another process is applying")
            await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", ADVISORY_LOCK_KEY)
        ledgers = {schema: await _ledger(conn, schema) for schema in files}
    return [_state(schema, files[schema], ledgers[schema]) for schema in files]


async def _ledger(conn: asyncpg.Connection, schema: str) -> dict[int, str]:
    """The versions applied to a schema and their names; none where no ledger exists
    yet (a database never migrated)."""
    if await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".schema_migrations') is None:
        return {}
    rows = await conn.fetch(f'SELECT version, name FROM "{schema}".schema_migrations')
    return {row["version"]: row["name"] for row in rows}


def _state(schema: str, files: list[Migration], ledger: dict[int, str]) -> SchemaState:
    known = {m.version for m in files}
    return SchemaState(
        schema=schema,
        missing=[m for m in files if m.version not in ledger],
        other=[(m, ledger[m.version]) for m in files if ledger.get(m.version, m.name) != m.name],
        unknown=[ledger[v] for v in sorted(ledger) if v not in known],
    )


def _refuse_other_files(states: list[SchemaState]) -> None:
    """Raises Unservable when a schema applied another migration than a file of this
    server at its version: counted as applied by its version alone, the file's changes
    would never be made, and the server would serve tables they are missing from."""
    differing = [
        f"the {state.schema} schema applied {applied} as its migration {file.version}, "
        f"where this server's file is {file.name}"
        for state in states
        for file, applied in state.other
    ]
    if differing:
        raise Unservable(
            f"the database's migrations differ from this server's: {'; '.join(differing)}. "
            "It was migrated by another build of Cairn: serve it with that one (each "
            "schema's ledger is its schema_migrations table)"
        )


def _lacks(state: SchemaState) -> str:
    missing = state.missing
    if len(missing) <= 3:
        return f"the {state.schema} schema lacks {', '.join(m.name for m in missing)}"
    return (
        f"the {state.schema} schema lacks {len(missing)} migrations, "
        f"{missing[0].name} ... {missing[-1].name}"
    )
