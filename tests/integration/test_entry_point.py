"""cairn.Client, Devo's factories and the profile file, through real servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

import cairn
from cairn import profiles, sync
from cairn.exceptions import UnauthenticatedError
from cairn.types import RegisteredModel
from cairn_server.auth.store import AuthStore
from cairn_server.common.config import Config
from tests.conftest import with_overrides
from tests.integration.auth.conftest import serve
from tests.integration.test_tls import pki, tls_port  # noqa: F401 (fixtures)


@pytest_asyncio.fixture(scope="module")
async def keyed(config: Config, pool: asyncpg.Pool) -> AsyncIterator[tuple[int, str]]:
    """A server requiring API keys, and a global admin's key."""
    server, port = await serve(with_overrides(config, auth="api_key"), pool)
    key, _ = await AuthStore(pool).create_key("entry-admin", "entry", None, global_admin=True)
    yield port, key
    await server.stop(grace=0)


@pytest.fixture
def made_outside_a_loop(server_port: int) -> cairn.Client:
    # A sync fixture: no event loop runs here, as none runs at a module's top level.
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
    return cairn.Client(f"http://127.0.0.1:{server_port}")


async def test_one_client_reaches_every_service_over_one_channel(
    made_outside_a_loop: cairn.Client, unique: str
) -> None:
    client = made_outside_a_loop
    channel = client._transport.channel
    assert not channel.opened  # nothing is opened before the first call
    async with client:
        for service in (client.tracking, client.registry, client.artifacts, client.auth):
            assert service._transport.channel is channel
        experiment_id = await client.tracking.create_experiment(f"entry-{unique}")
        model = await client.registry.upsert_registered_model(RegisteredModel(f"m-{unique}"))
        info = await client.artifacts.upload(f"entry/{unique}.txt", b"hello")
        projects = await client.auth.get_projects()
        assert channel.opened
        assert experiment_id and model.id and info.size == 5
        assert "default" in [p.project_id for p in projects]
    assert not channel.opened  # closing the client closed its one channel


@pytest.mark.parametrize("style", [profiles.STANDALONE, profiles.BEARER])
async def test_devos_factory_sends_the_token_in_either_style(
    keyed: tuple[int, str], style: str, unique: str
) -> None:
    port, key = keyed
    async with cairn.create_client_from_token(f"http://127.0.0.1:{port}", key, style) as client:
        assert await client.find_model(f"absent-{unique}") is None
    header = "x-api-key" if style == profiles.STANDALONE else "authorization"
    assert client._transport._metadata[0][0] == header
    async with cairn.create_client_from_token(f"http://127.0.0.1:{port}", "cairn_bad") as bad:
        with pytest.raises(UnauthenticatedError):
            await bad.get_models()


def _write_profiles(path: Path, port: int, key: str) -> Path:
    path.write_text(
        f"""
[default]
url = http://127.0.0.1:{port}

[testing]
host = 127.0.0.1
port : {port}
tls = false
token = {key}
auth_type = bearer
project = default
timeout = 45
download_path = ~/models
"""
    )
    path.chmod(0o600)  # it holds a token
    return path


async def test_a_profile_makes_a_client_that_works(
    keyed: tuple[int, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unique: str
) -> None:
    port, key = keyed
    file = _write_profiles(tmp_path / "elsewhere.ini", port, key)
    monkeypatch.setenv(profiles.PROFILES_ENV, str(file))
    async with cairn.create_client_from_profile("testing") as client:
        assert client._transport.timeout == 45
        assert client.models.download_path == Path("~/models").expanduser()
        model = await client.registry.upsert_registered_model(RegisteredModel(f"p-{unique}"))
        assert (await client.get_model(f"p-{unique}")).id == model.id
    # Keywords win over the profile, as in Devo; a directory means its profiles.ini.
    _write_profiles(tmp_path / "profiles.ini", port, key)
    async with cairn.create_client_from_profile("testing", tmp_path, timeout=5) as client:
        assert client._transport.timeout == 5
    async with cairn.create_client_from_profile(path=file) as anonymous:
        with pytest.raises(UnauthenticatedError):  # [default] has no token
            await anonymous.get_models()


def test_profile_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(profiles.ProfileError, match="no profile file"):
        profiles.load_profile("x", tmp_path / "missing.ini")
    file = tmp_path / "p.ini"
    file.write_text(
        "[a]\nurl = http://h:1\n[b]\nhost = h\ntoken_style = basic\n[c]\nurl = ftp://h\n"
    )
    with pytest.raises(profiles.ProfileError, match=r"no profile 'z' \(it has: a, b, c\)"):
        profiles.load_profile("z", file)
    with pytest.raises(profiles.ProfileError, match="standalone or bearer"):
        profiles.load_profile("b", file)
    with pytest.raises(profiles.ProfileError, match=r"\[c\]: url: the URL is not http://"):
        profiles.load_profile("c", file)
    assert profiles.load_profile("a", file) == profiles.Profile("a", "h", 1)
    https = profiles.parse_profile("s", {"url": "https://cairn.example.com", "ca": "~/ca.pem"})
    assert (https.port, https.tls, https.ca) == (443, True, str(Path("~/ca.pem").expanduser()))


async def test_a_host_profile_without_tls_key_speaks_tls(
    tls_port: int,
    pki: dict[str, Path],
    tmp_path: Path,  # noqa: F811
) -> None:
    # Plaintext to this TLS-only server would fail; so would the token sent in the clear.
    file = tmp_path / "profiles.ini"
    file.write_text(f"[prod]\nhost = localhost\nport = {tls_port}\nca = {pki['ca']}\n")
    file.chmod(0o600)
    async with cairn.create_client_from_profile("prod", file, timeout=5) as client:
        assert await client.tracking.get_experiment_by_name("no-such-experiment") is None


def test_the_default_profile_path_is_under_the_users_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(profiles.PROFILES_ENV, raising=False)
    expected = Path("~/.config/cairn/profiles.ini").expanduser()
    assert profiles.profiles_path() == expected


async def test_the_sync_factory_runs_devos_calls_without_await(
    keyed: tuple[int, str], tmp_path: Path, unique: str
) -> None:
    port, key = keyed
    model_file = tmp_path / "pokemon.onnx"
    model_file.write_bytes(b"onnx bytes")

    def scenario() -> None:  # a script's thread; the server answers on the test's loop
        with sync.create_client_from_token(
            f"http://127.0.0.1:{port}", key, download_path=tmp_path / "down"
        ) as client:
            client.add_model(f"pokemon-{unique}", "ONNX", str(model_file), description="funny")
            found = client.get_model(f"pokemon-{unique}", download_file=True)
            assert (found.engine, found.description) == ("ONNX", "funny")
            assert client.find_model(f"nothing-{unique}") is None
            assert f"pokemon-{unique}" in [m.name for m in client.get_models()]
            assert client.tracking.search_experiments() is not None

    await asyncio.to_thread(scenario)
