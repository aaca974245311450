"""The ends of the settings' ranges work where the values are used: PostgreSQL takes
the database guards, request ids and LogBatch ids prune, the janitor sweeps, and a
garbage collection succeeds (past these ends each failed later, in PostgreSQL or
Python: audit 20). A database URL PostgreSQL or asyncpg cannot take ends the server
commands as the docs say, naming the database."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from structlog.testing import capture_logs

import cairn
from cairn.types import OperationState
from cairn_server.artifacts import backends
from cairn_server.artifacts.janitor import Janitor
from cairn_server.artifacts.store import ObjectStore
from cairn_server.common import database
from cairn_server.common.config import Config
from cairn_server.common.idempotency import Idempotency
from cairn_server.common.settings import Bounds
from cairn_server.tracking import retention
from tests.conftest import new_project, serving, with_overrides


def _bounds(setting: str) -> Bounds:
    field = next(f for f in dataclasses.fields(Config) if f.name == setting)
    bounds: Bounds = field.metadata["bounds"]
    return bounds


@contextlib.asynccontextmanager
async def _pool(config: Config, timeout: float, work_mem_kib: int) -> AsyncIterator[asyncpg.Pool]:
    changed = with_overrides(
        config,
        db_statement_timeout_seconds=timeout,
        db_work_mem_kib=work_mem_kib,
        db_pool_min_size=0,
        db_pool_size=1,
    )
    pool = await database.create_pool(config.database_url, changed)
    try:
        yield pool
    finally:
        await database.close_pool(pool)


@pytest.mark.parametrize("work_mem_end", ["least", "most"])
async def test_postgresql_takes_the_ends_of_the_database_guards(
    config: Config, work_mem_end: str
) -> None:
    longest = _bounds("db_statement_timeout_seconds").most
    work_mem = int(getattr(_bounds("db_work_mem_kib"), work_mem_end))
    async with _pool(config, longest, work_mem) as pool:
        rows = await pool.fetch(
            """SELECT name, setting FROM pg_settings
               WHERE name IN ('statement_timeout', 'work_mem') ORDER BY name"""
        )
    assert [row["setting"] for row in rows] == [str(int(longest * 1000)), str(work_mem)]


async def test_the_shortest_statement_timeout_is_a_timeout(config: Config) -> None:
    """1 ms: no positive timeout rounds to 0, which PostgreSQL takes for none at all."""
    shortest = _bounds("db_statement_timeout_seconds").least
    async with _pool(config, shortest, Config().db_work_mem_kib) as pool:
        with pytest.raises(asyncpg.QueryCanceledError):
            await pool.execute("SELECT pg_sleep(5)")


async def test_request_ids_prune_with_the_longest_retention(pool: asyncpg.Pool) -> None:
    longest = _bounds("request_id_retention_seconds").most
    assert longest == _bounds("batch_id_retention_seconds").most
    once = Idempotency(pool, {"cairn.tracking.v1.TrackingService": "tracking"}, exempt=set())
    assert await once.prune(longest) >= 0
    assert await retention.prune(pool, longest, longest) >= 0


async def test_the_janitor_sweeps_with_the_longest_min_age(
    config: Config, pool: asyncpg.Pool
) -> None:
    longest = timedelta(seconds=_bounds("artifact_janitor_min_age_seconds").most)
    janitor = Janitor(ObjectStore(pool), backends.from_config(config), longest)
    with capture_logs() as logged:
        await janitor.sweep()
    assert [e for e in logged if e["log_level"] in ("warning", "error")] == []


async def test_a_garbage_collection_succeeds_with_the_ends_of_the_ranges(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    ends = {
        "request_id_retention_seconds": _bounds("request_id_retention_seconds").most,
        "batch_id_retention_seconds": _bounds("batch_id_retention_seconds").most,
        "artifact_janitor_min_age_seconds": _bounds("artifact_janitor_min_age_seconds").most,
        "max_message_bytes": int(_bounds("max_message_bytes").most),
        "shutdown_grace_seconds": _bounds("shutdown_grace_seconds").most,
        "health_probe_interval_seconds": _bounds("health_probe_interval_seconds").least,
    }
    async with serving(config, pool, [], **ends) as port:
        project = await new_project(port, f"bounds-{unique}")
        async with cairn.Client(f"http://127.0.0.1:{port}", project=project) as client:
            started = await client.operations.start_garbage_collection(datetime.timedelta(hours=1))
            done = await client.operations.wait_operation(started.name, timeout=60)
    assert done.state is OperationState.SUCCEEDED, done.errors


def _cairn(*command: str, database_url: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("CAIRN_")}
    env.update(CAIRN_DATABASE_URL=database_url, CAIRN_DATA_DIR=str(data_dir))
    return subprocess.run(
        [sys.executable, "-m", "cairn_server.cli", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


_COMMANDS = {
    "serve": ["serve", "--listen-address", "127.0.0.1:0"],
    "migrate": ["migrate"],
    "keys create": ["keys", "create", "--user", "ops"],
}


@pytest.mark.parametrize(
    ("parameter", "refused"),
    [
        # libpq's, common in its URLs; asyncpg hands it to PostgreSQL as a setting.
        (
            "connect_timeout=10",
            'unrecognized configuration parameter "connect_timeout"; asyncpg hands each '
            "parameter of the URL it does not take itself (libpq's connect_timeout, say) "
            "to PostgreSQL as a setting: remove it from the URL",
        ),
        (
            "options=-c%20work_mem%3D1x",
            'invalid value for parameter "work_mem": "1x"; Valid units for this parameter',
        ),
    ],
    ids=["connect_timeout", "options"],
)
@pytest.mark.parametrize("command", _COMMANDS)
def test_a_url_parameter_postgresql_refuses_is_a_database_it_cannot_use(
    postgres_url: str, tmp_path: Path, parameter: str, refused: str, command: str
) -> None:
    """Each command ended in the catch-all of our own bugs ("Error: unexpected
    UndefinedObjectError: ..."), `python -m cairn_server.cli migrate` in a traceback."""
    joint = "&" if "?" in postgres_url else "?"
    url = postgres_url + joint + parameter
    done = _cairn(*_COMMANDS[command], database_url=url, data_dir=tmp_path)
    assert done.returncode == 1, done.stderr
    [told] = done.stderr.strip().splitlines()[-1:]
    assert told.startswith(f"cairn {command}: cannot use the database at "), done.stderr
    assert f" (--database-url, CAIRN_DATABASE_URL): {refused}" in told, done.stderr
    assert "unexpected" not in done.stderr and "Traceback" not in done.stderr


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user = parts.username or "postgres"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


@pytest.mark.parametrize("on_a_socket", [False, True], ids=["tcp", "socket"])
def test_an_unencoded_at_in_the_password_is_an_unreadable_url(
    postgres_url: str, tmp_path: Path, on_a_socket: bool
) -> None:
    """asyncpg ended the password at its first "@" and looked up a host made of the
    rest ("s3cret@127.0.0.1"), while the message named another ("cannot use the
    database at 127.0.0.1:1/cairn ...: Name or service not known") and the docs
    promised the URL refused as one that cannot be read."""
    url = "postgresql://ops:p@s3cret@127.0.0.1:1/cairn"
    if on_a_socket:
        url = _with_password(postgres_url, "p@s3cret")
    for command in (_COMMANDS["migrate"], _COMMANDS["keys create"]):
        done = _cairn(*command, database_url=url, data_dir=tmp_path)
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip().endswith(
            "cannot use the database at the URL given (--database-url, CAIRN_DATABASE_URL): "
            f"{_UNREADABLE}"
        ), done.stderr
        assert "s3cret" not in done.stderr


_UNREADABLE = (
    "not a PostgreSQL URL that can be read: percent-encode any of / ? # @ : in its "
    "user name and password, and write an IPv6 host in brackets, [::1]"
)


def test_an_unclosed_ipv6_bracket_is_an_unreadable_url_not_a_usage_error(
    tmp_path: Path,
) -> None:
    """The check of the URL's text raised urlsplit's ValueError, which the command took
    for a usage error: exit 2, `cairn: error: Invalid IPv6 URL`, naming no setting."""
    done = _cairn(
        *_COMMANDS["migrate"], database_url="postgresql://u:s3cret@[::1/db", data_dir=tmp_path
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().endswith(f"(--database-url, CAIRN_DATABASE_URL): {_UNREADABLE}"), (
        done.stderr
    )
    assert "s3cret" not in done.stderr
