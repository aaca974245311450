"""What the `cairn` command takes from a profile, read as the Python client reads it,
and when a failed import of the server is a missing install."""

from __future__ import annotations

import os
from pathlib import Path

import click
import pytest

from cairn import profiles
from cairn._client import client_from_profile
from cairn.cli._connection import Connection, resolve
from cairn.cli._root import cli
from cairn.cli._server import server_not_installed


@pytest.fixture
def profile_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for variable in [name for name in os.environ if name.startswith("CAIRN_")]:
        monkeypatch.delenv(variable)
    file = tmp_path / "profiles.ini"
    file.write_text(
        "[forever]\nurl = http://127.0.0.1:50051\ntimeout = none\n"
        "registry_address = 127.0.0.1:50052\nartifacts_address = 127.0.0.1:50053\n"
    )
    monkeypatch.setenv(profiles.PROFILES_ENV, str(file))
    return file


def _connection(monkeypatch: pytest.MonkeyPatch, **variables: str) -> Connection:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with click.Context(cli) as ctx:
        return resolve(ctx)


def test_a_profile_without_deadline_has_none_in_the_cli_as_in_the_client(
    profile_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = profiles.load_profile("forever")
    assert profile.timeout is None
    assert _connection(monkeypatch, CAIRN_PROFILE="forever").timeout is None
    assert client_from_profile(profile)._transport.timeout is None
    assert _connection(monkeypatch, CAIRN_TIMEOUT="5").timeout == 5.0


def test_a_profiles_services_go_with_its_address(
    profile_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = _connection(monkeypatch, CAIRN_PROFILE="forever")
    assert own.service_addresses == {"registry": "127.0.0.1:50052", "artifacts": "127.0.0.1:50053"}
    elsewhere = _connection(monkeypatch, CAIRN_ADDRESS="10.0.0.7:50051")
    assert elsewhere.service_addresses == {}
    given = _connection(monkeypatch, CAIRN_ARTIFACTS_ADDRESS="10.0.0.8:50051")
    assert given.service_addresses == {"artifacts": "10.0.0.8:50051"}


def test_only_a_missing_package_is_a_missing_install() -> None:
    assert server_not_installed(ModuleNotFoundError("no asyncpg", name="asyncpg"))
    assert server_not_installed(ImportError("cannot import name 'x'", name="minio"))
    # The server's own modules are installed with it: failing to import them is a bug.
    assert not server_not_installed(ModuleNotFoundError("gone", name="cairn_server.gone"))
    assert not server_not_installed(ImportError("cannot import", name="cairn_server.cli"))
    assert not server_not_installed(ImportError("cannot import", name="cairn._targets"))
    assert not server_not_installed(ImportError("raised by hand"))


def test_a_server_not_installed_is_a_missing_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *args: None)
    assert server_not_installed(ImportError("cannot import", name="cairn_server.cli"))


def test_the_api_key_stays_out_of_the_connection_repr() -> None:
    """A traceback that shows locals (pytest's, rich's, an error tracker's) prints it."""
    connection = Connection(
        "127.0.0.1", 50051, False, None, "cairn_s3cret", "bearer", "default", None, {}
    )
    assert "s3cret" not in repr(connection)
    assert "host='127.0.0.1'" in repr(connection)


def test_a_ca_file_past_a_mebibyte_is_a_usage_error_read_no_further(
    profile_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CAIRN_CA_FILE=/dev/zero was read until memory ran out."""
    with pytest.raises(click.UsageError) as raised:
        _connection(monkeypatch, CAIRN_TLS="true", CAIRN_CA_FILE="/dev/zero")
    assert (
        raised.value.message == "CAIRN_CA_FILE: /dev/zero cannot be read (more than 1048576 bytes)"
    )
