"""A fresh deployment gets its first admin key from the command line, as the README says."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

import cairn
from cairn.types import ApiKeyExpirationTime, ProjectRole
from cairn_server.common import database
from cairn_server.common.config import Config
from tests.conftest import with_overrides
from tests.integration.auth.conftest import serve


def _cairn(*args: str, database_url: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CAIRN_DATABASE_URL": database_url, "CAIRN_LOG_FORMAT": "json"}
    env.update(settings)
    return subprocess.run(
        [sys.executable, "-m", "cairn_server.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_keys_create_admin_bootstraps_a_server_that_requires_keys(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    created = _cairn(
        "keys",
        "create",
        "--admin",
        "--user",
        f"ops-{unique}",
        "--expires",
        "never",
        database_url=config.database_url,
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("cairn_") and key not in created.stderr
    server, port = await serve(with_overrides(config, auth="api_key"), pool)
    try:
        async with cairn.AuthClient.insecure_connection("127.0.0.1", port, key) as admin:
            project = await admin.create_project(f"team-{unique}")
            await admin.add_user_project_role(f"alice-{unique}", project, ProjectRole.EDITOR)
            alice_key = await admin.create_user_api_key(
                f"alice-{unique}", "laptop", ApiKeyExpirationTime.NINETY_DAYS
            )
            keys = await admin.get_api_keys()
        assert [(k.name, k.expire_time) for k in keys] == [("bootstrap", None)]
        async with cairn.TrackingClient.insecure_connection(
            "127.0.0.1", port, alice_key, project=project
        ) as alice:
            assert await alice.create_experiment("first")
    finally:
        await server.stop(grace=0)


def test_keys_create_rejects_a_bad_user(config: Config) -> None:
    refused = _cairn("keys", "create", "--user", "two words", database_url=config.database_url)
    assert refused.returncode == 2
    assert "must not contain whitespace" in refused.stderr


def test_keys_create_rejects_a_user_that_looks_like_another(config: Config) -> None:
    """Names may hold invisible characters (a joiner of an emoji, say); a user id may
    not, or two ids shown alike would be two users."""
    # Within the id: at an end, the rule of names refuses it first.
    refused = _cairn("keys", "create", "--user", "ali\u200bce", database_url=config.database_url)
    assert refused.returncode == 2
    assert "must not contain invisible characters" in refused.stderr


def test_serve_refuses_auth_none_off_loopback(config: Config) -> None:
    refused = _cairn("serve", "--listen-address", "0.0.0.0:0", database_url=config.database_url)
    assert refused.returncode == 2
    assert "CAIRN_AUTH=none on 0.0.0.0:0" in refused.stderr


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("postgresql://ops:s3cret@127.0.0.1:1/cairn", "127.0.0.1:1/cairn"),
        ("notaurl", "the URL given"),
        ("postgresql://ops:s3cret@h1:1,h2:2/cairn", "the URL given"),  # several hosts
        ("localhost:abc", "the URL given"),
        # A password holding "/" or "?" unencoded: asyncpg's errors quote a piece of it.
        ("postgresql://ops:s3cret/x@127.0.0.1:1/cairn", "the URL given"),
        ("postgresql://ops:s3cret?x@127.0.0.1:1/cairn", "the URL given"),
        # One beginning with digits, before its "/": read as a port, the rest as a path.
        ("postgresql://ops:2024/s3cret@127.0.0.1:1/cairn", "the URL given"),
    ],
)
def test_a_database_out_of_reach_is_named_not_unexpected(url: str, where: str) -> None:
    """The commonest mistakes of a deployment ended in the catch-all of our own bugs
    ("unexpected ConnectionRefusedError"), naming no database."""
    for command in (["migrate"], ["keys", "create", "--user", "ops"], _SERVE):
        done = _cairn(*command, database_url=url)
        _named_not_shown(done, where)


@pytest.mark.parametrize(
    "url",
    ["postgresql://ops:s3cret/x@127.0.0.1:1/cairn", "postgresql://ops:s3cret?x@127.0.0.1:1/cairn"],
)
def test_an_unreadable_url_is_named_not_shown_with_no_connection_kept(url: str) -> None:
    """A pool kept with no connection (CAIRN_DB_POOL_MIN_SIZE=0) read its URL only at
    its first use, whose ValueError, quoting a piece of the password, came out as
    unexpected."""
    for command in (["migrate"], ["keys", "create", "--user", "ops"]):
        done = _cairn(*command, database_url=url, CAIRN_DB_POOL_MIN_SIZE="0")
        _named_not_shown(done, "the URL given")


def test_a_url_with_a_setting_asyncpg_refuses_is_told_which() -> None:
    """Its message names a setting, no secret: it is kept, not the fixed one of a URL
    that cannot be read."""
    url = "postgresql://ops:s3cret@127.0.0.1:1/cairn?sslmode=bogus"
    done = _cairn("migrate", database_url=url)
    _named_not_shown(done, "127.0.0.1:1/cairn")
    assert "`sslmode` parameter must be one of" in done.stderr


def _named_not_shown(done: subprocess.CompletedProcess[str], where: str) -> None:
    assert done.returncode == 1, done.stderr
    assert f"cannot use the database at {where}" in done.stderr
    assert "s3cret" not in done.stderr and "Traceback" not in done.stderr


_SERVE = ["serve", "--listen-address", "127.0.0.1:0"]


def test_a_database_that_does_not_exist_is_named_not_unexpected(config: Config) -> None:
    """`serve` named only a refused port; a database missing from the server (or a user
    refused) ended in "unexpected InvalidCatalogNameError", and `migrate` too."""
    parts = urlsplit(config.database_url)
    missing = urlunsplit(parts._replace(path="/no_such_database"))
    for command in (["migrate"], _SERVE):
        done = _cairn(*command, database_url=missing)
        assert done.returncode == 1, done.stderr
        assert "cannot use the database at" in done.stderr
        assert '"no_such_database" does not exist' in done.stderr
        assert "unexpected" not in done.stderr


def test_a_database_that_never_answers_is_given_up_on_and_named() -> None:
    """A database whose address drops packets kept `serve` silent for a minute (asyncpg's
    bound), then ended with the reason left empty."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # never accepted: no answer
        port = silent.getsockname()[1]
        started = time.monotonic()
        done = _cairn(*_SERVE, database_url=f"postgresql://ops@127.0.0.1:{port}/cairn")
    assert time.monotonic() - started < 2 * database.CONNECT_TIMEOUT_SECONDS
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().endswith(
        f"cannot use the database at 127.0.0.1:{port}/cairn (--database-url, "
        "CAIRN_DATABASE_URL): no answer in time (TimeoutError)"
    )
