"""Fixtures shared by every tier: a throwaway PostgreSQL, an S3-protocol server on
loopback and the three services in-process on a free port.

Everything async runs on one session-wide event loop (see pyproject's pytest
settings), because a server fixture and the tests that call it must share a loop.
"""

from __future__ import annotations

import os

# Tests start processes (pg_ctl, the server) from a process busy with gRPC threads;
# fork handlers that try to save gRPC's state in the child can crash it before it execs.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import asyncio
import contextlib
import dataclasses
import gc
import inspect
import io
import resource
import signal
import threading
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pgserver
import pytest
import pytest_asyncio
from minio import Minio
from moto.server import ThreadedMotoServer

import cairn
from cairn._clients._uploads import CHUNK
from cairn_server import catalog
from cairn_server.common import database, logs, page_seals
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer, migrate

logs.configure("info", "console")

BUCKET = "cairn-test"  # of the S3 backend (s3_config) on moto


# The event loop every async test and fixture runs on, once one has run.
_shared_loop: list[asyncio.AbstractEventLoop] = []


@pytest_asyncio.fixture(scope="session", autouse=True)
async def _note_the_shared_loop() -> AsyncIterator[None]:
    _shared_loop.append(asyncio.get_running_loop())
    yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A test stopped for its time (pyproject's `timeout`) says where each asyncio task
    waited: the threads' stacks pytest-timeout prints show only the idle event loop."""
    report = yield
    if report.failed and _timed_out(call) and _shared_loop:
        try:
            stacks = _task_stacks(_shared_loop[0])
        except Exception as error:  # an error of a hook's ends the whole session
            stacks = f"not read: {error!r}"
        report.sections.append(("asyncio tasks at the timeout", stacks))
    return report


def _timed_out(call: pytest.CallInfo[None]) -> bool:
    return call.excinfo is not None and str(call.excinfo.value).endswith("from pytest-timeout.")


def _task_stacks(loop: asyncio.AbstractEventLoop) -> str:
    return "\n".join(
        "\n".join([repr(task), *_awaiting(task.get_coro())]) for task in asyncio.all_tasks(loop)
    )


# Where each kind of suspended code keeps its frame, and what it waits for.
_SUSPENDED = (("cr_frame", "cr_await"), ("ag_frame", "ag_await"), ("gi_frame", "gi_yieldfrom"))


def _awaiting(awaited: object) -> Iterator[str]:
    """The line each coroutine of a task's chain waits at, outermost first. A Task's own
    stack shows its outermost coroutine only; an `async with` waits in an async
    generator's asend, an object that only its references lead through."""
    for _ in range(100):  # a chain's length; a cycle of references would never end
        if awaited is None:
            return
        held = next(((f, a) for f, a in _SUSPENDED if getattr(awaited, f, None)), None)
        if held is None:
            generators = [o for o in gc.get_referents(awaited) if inspect.isasyncgen(o)]
            awaited = generators[0] if generators else None
            continue
        frame = getattr(awaited, held[0])
        yield f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
        awaited = getattr(awaited, held[1])


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private PostgreSQL 16 on a unix socket, deleted after the session."""
    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="delete")
    yield server.get_uri()


@pytest_asyncio.fixture
async def fresh_url(postgres_url: str) -> AsyncIterator[str]:
    """A database of its own on the test PostgreSQL, never migrated: what the other
    tests of the process store there (a run larger than a server's messages, say)
    cannot stop a server started on it."""
    async with database_of_its_own(postgres_url) as url:
        yield url


@contextlib.asynccontextmanager
async def database_of_its_own(postgres_url: str) -> AsyncIterator[str]:
    """The URL of a new database on postgres_url's PostgreSQL, dropped afterwards."""
    name = f"fresh_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlunsplit(urlsplit(postgres_url)._replace(path=f"/{name}"))
        finally:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pgserver.PostgresServer]:
    """A PostgreSQL of the module's own, which a test may stop without harming others."""
    yield pgserver.get_server(tmp_path_factory.mktemp("pg-own"), cleanup_mode="delete")


def stop_postgres(server: pgserver.PostgresServer, timeout: float = 30.0) -> None:
    """Stops it as `pg_ctl stop -m fast` does (SIGINT to the postmaster), and waits until
    it is gone; start it again with `server.ensure_postgres_running()`."""
    pid = server.get_pid()
    assert pid is not None, "PostgreSQL is not running"
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise AssertionError(f"PostgreSQL (pid {pid}) did not stop within {timeout} s")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """host:port of moto's S3-protocol server on loopback (plain HTTP)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def s3_config(config: Config, s3_endpoint: str) -> Config:
    """config with the S3 backend, on moto."""
    client = Minio(
        s3_endpoint, access_key="test", secret_key="test", secure=False, region="us-east-1"
    )
    if not client.bucket_exists(BUCKET):
        client.make_bucket(BUCKET)
    return with_overrides(
        config,
        artifact_backend="s3",
        s3_endpoint=s3_endpoint,
        s3_bucket=BUCKET,
        s3_prefix="store",
        s3_region="us-east-1",
        s3_access_key="test",
        s3_secret_key="test",
        s3_secure=False,
    )


@pytest.fixture(scope="session")
def config(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Config:
    data_dir = tmp_path_factory.mktemp("cairn-data")
    return Config(
        listen_address="127.0.0.1:0",
        database_url=postgres_url,
        data_dir=str(data_dir),
        shutdown_grace_seconds=2.0,
    )


@pytest_asyncio.fixture(scope="session")
async def pool(config: Config) -> AsyncIterator[asyncpg.Pool]:
    pool = await database.create_pool(config.database_url, config)
    await migrate(pool, catalog.select([]))
    yield pool
    await database.close_pool(pool)


@pytest_asyncio.fixture(scope="session")
async def server_port(config: Config, pool: asyncpg.Pool) -> AsyncIterator[int]:
    """The port of all three services hosted in-process, as `make run` hosts them."""
    server = CairnServer(config, catalog.select([]), pool)
    port = await server.start()
    yield port
    await server.stop(grace=1.0)


@pytest.fixture
def unique() -> str:
    """A short unique suffix that keeps names of different tests apart."""
    return uuid.uuid4().hex[:10]


async def new_project(port: int, name: str) -> str:
    """Creates a project through the auth service (the test servers run with auth=none,
    so every caller is a global admin)."""
    async with cairn.AuthClient.insecure_connection("127.0.0.1", port) as auth:
        return await auth.create_project(name)


async def put_through(url: str, body: bytes, headers: Mapping[str, str]) -> None:
    """PUTs body to a presigned URL of the store (on loopback), in a thread."""

    def put() -> None:
        request = urllib.request.Request(url, data=body, method="PUT", headers=dict(headers))
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200

    await asyncio.to_thread(put)


@contextlib.contextmanager
def disk_full_after(size: int) -> Iterator[None]:
    """No file of this process grows past size bytes: a write past it fails (EFBIG), as
    one on a full disk does (ENOSPC), where a real full disk needs a file system of its
    own."""
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, limits[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)


def on_event_loop() -> bool:
    """Whether the calling thread is running an event loop (a worker thread is not)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], timeout: float = 15.0, what: str = "condition"
) -> None:
    """Waits until check() holds, asking again every few milliseconds; fails after timeout."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        outcome = check()
        if await outcome if inspect.isawaitable(outcome) else outcome:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        await asyncio.sleep(0.02)


async def statements_waiting_for_locks(pool: asyncpg.Pool) -> int:
    """How many statements of pool's database wait for a lock (an xdist worker's: the
    other workers have databases of their own)."""
    waiting: int = await pool.fetchval(
        """SELECT count(*) FROM pg_stat_activity
           WHERE wait_event_type = 'Lock' AND datname = current_database()"""
    )
    return waiting


_Answer = TypeVar("_Answer")


async def answered_beside_waiters(
    pool: asyncpg.Pool, waiters: int, call: Awaitable[_Answer], what: str
) -> tuple[_Answer, int]:
    """call's answer, sent once at least `waiters` statements of pool's database wait for
    a lock (calls held up behind another transaction), and how many wait once it is
    answered: the calls of a kind hold no more connections than their share."""

    async def enough_waiting() -> bool:
        return await statements_waiting_for_locks(pool) >= waiters

    await eventually(enough_waiting, what=what)
    answer = await call
    return answer, await statements_waiting_for_locks(pool)


async def status_codes(*calls: Awaitable[object]) -> list[grpc.StatusCode]:
    """The status each gRPC call, run at once, answers with (OK for an answer)."""
    codes = []
    for outcome in await asyncio.gather(*calls, return_exceptions=True):
        if isinstance(outcome, grpc.aio.AioRpcError):
            codes.append(outcome.code())
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            codes.append(grpc.StatusCode.OK)
    return codes


@contextlib.asynccontextmanager
async def another_transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a transaction, rolled back at the end, that stands in for another
    call's half done. It waits a minute before it looks for a deadlock, longer than the
    server's connections, so that of a deadlock PostgreSQL aborts the server's call."""
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute("SET LOCAL deadlock_timeout = '1min'")
            yield conn
        finally:
            await transaction.rollback()


async def holds_up_another(conn: asyncpg.Connection) -> bool:
    """Whether another session waits for a lock that conn's session holds.

    pg_stat_activity is read once a transaction and kept to its end: without clearing
    that, conn in a transaction went on seeing the sessions as they were when it first
    asked, before the other began to wait."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return bool(
        await conn.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"""
        )
    )


async def held_up_in_turn(conn: asyncpg.Connection) -> bool:
    """Whether a session waits for one that waits for conn's (holds_up_another, a step
    further along)."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return bool(
        await conn.fetchval(
            """SELECT count(*) FROM pg_stat_activity waiting, pg_stat_activity held
               WHERE held.pid = ANY(pg_blocking_pids(waiting.pid))
                 AND pg_backend_pid() = ANY(pg_blocking_pids(held.pid))"""
        )
    )


def with_overrides(config: Config, **changes: object) -> Config:
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def serving(
    config: Config, pool: asyncpg.Pool, services: list[str], **changes: object
) -> AsyncIterator[int]:
    """The port of a server of services (catalog names) run with config's changes."""
    server = CairnServer(with_overrides(config, **changes), catalog.select(services), pool)
    port = await server.start()
    try:
        yield port
    finally:
        await server.stop(grace=1.0)


@contextlib.asynccontextmanager
async def serving_on_own_pool(
    config: Config, services: list[str], pool_size: int, **changes: object
) -> AsyncIterator[int]:
    """The port of a server of services on a pool of pool_size connections of its own,
    run with config's changes (a short CAIRN_DB_ACQUIRE_TIMEOUT_SECONDS, say)."""
    changed = with_overrides(config, db_pool_size=pool_size, db_pool_min_size=0, **changes)
    own = await database.create_pool(config.database_url, changed)
    try:
        async with serving(changed, own, services) as port:
            yield port
    finally:
        await database.close_pool(own)


class Restartable:
    """A server of services (all by default) that stops and starts again on the same
    port, as one restarted."""

    def __init__(self, config: Config, pool: asyncpg.Pool, services: list[str] | None = None):
        self._config, self._pool, self._services = config, pool, services or []
        self._server: CairnServer | None = None
        self.port = 0

    async def start(self) -> None:
        settings = with_overrides(self._config, listen_address=f"127.0.0.1:{self.port}")
        self._server = CairnServer(settings, catalog.select(self._services), self._pool)
        self.port = await self._server.start()

    async def stop(self, grace: float = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace=grace)
            self._server = None


async def sealed_by(pool: asyncpg.Pool, schema: str, token: str) -> str:
    """token sealed as the service of schema seals the tokens it answers: how a test
    sends an edited token past the seal, to the checks behind it."""
    key = await pool.fetchval(f'SELECT secret FROM "{schema}".page_token_key')
    return page_seals.seal(key, token)


def unsealed(token: str) -> str:
    """The token a sealed one carries (what paging.py wrote)."""
    return token.rpartition(page_seals.SEPARATOR)[0]


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


class HeldBack(io.RawIOBase):
    """An upload's source whose third read waits until let go: by then the server has
    accepted the upload's header and received its first chunk."""

    SIZE = 3 * CHUNK

    def __init__(self) -> None:
        self.reads = 0
        self.under_way = threading.Event()
        self.go = threading.Event()
        self._data = io.BytesIO(bytes(range(256)) * (self.SIZE // 256))

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        if self.reads == 3:
            self.under_way.set()
            self.go.wait(30)
        return self._data.read(size)


def s3_client(s3_config: Config) -> Minio:
    return Minio(
        s3_config.s3_endpoint,
        access_key="test",
        secret_key="test",
        secure=False,
        region="us-east-1",
    )
