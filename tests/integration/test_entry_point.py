"""cairn.Client, Devo's factories and the profile file, through real servers."""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio

import cairn
from cairn import profiles, sync
from cairn._channels import LazyChannel
from cairn.exceptions import ClientClosedError, UnauthenticatedError
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
    # A closed client stays closed, in every project of it: no call reopens a channel.
    other_project = client.tracking.for_project("elsewhere")
    for call in (client.auth.get_projects(), other_project.search_experiments()):
        with pytest.raises(ClientClosedError, match="closed"):
            await call
    assert not channel.opened
    await client.close()  # again: nothing to do


def _counting_channels(monkeypatch: pytest.MonkeyPatch) -> list[grpc.aio.Channel]:
    opened: list[grpc.aio.Channel] = []
    insecure_channel = grpc.aio.insecure_channel

    def counting(*args: Any, **kwargs: Any) -> grpc.aio.Channel:
        opened.append(insecure_channel(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(grpc.aio, "insecure_channel", counting)
    return opened


async def test_a_call_while_the_client_closes_is_refused_and_opens_nothing(
    server_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = _counting_channels(monkeypatch)
    client = cairn.Client(f"http://127.0.0.1:{server_port}")
    await client.auth.get_projects()
    closing = asyncio.create_task(client.close())
    await asyncio.sleep(0)  # close() has begun and awaits the channel's close
    with pytest.raises(ClientClosedError):
        await client.auth.get_projects()
    await closing
    assert len(opened) == 1 and not client._transport.channel.opened
    assert opened[0].get_state() == grpc.ChannelConnectivity.SHUTDOWN


async def test_a_loop_is_refused_while_another_loop_uses_the_client(server_port: int) -> None:
    client = cairn.Client(f"http://127.0.0.1:{server_port}")
    await client.auth.get_projects()  # this loop's channel; this loop keeps running

    def from_another_loop() -> None:
        asyncio.run(client.auth.get_projects())

    with pytest.raises(RuntimeError, match="in use by another running event loop"):
        await asyncio.to_thread(from_another_loop)
    await client.close()


async def test_loops_taking_turns_share_their_channels_and_close_closes_all(
    server_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = _counting_channels(monkeypatch)
    client = cairn.Client(f"http://127.0.0.1:{server_port}")

    def taking_turns() -> None:  # a script's thread; the server answers on the test's loop
        first, second = asyncio.new_event_loop(), asyncio.new_event_loop()
        for _ in range(5):
            first.run_until_complete(client.auth.get_projects())
            second.run_until_complete(client.auth.get_projects())
        first.run_until_complete(client.close())
        first.close()
        second.close()

    await asyncio.to_thread(taking_turns)
    assert len(opened) == 2  # one a loop, not one a turn
    assert [c.get_state() for c in opened] == [grpc.ChannelConnectivity.SHUTDOWN] * 2


def test_threads_racing_to_open_the_channel_open_one() -> None:
    opened: list[grpc.aio.Channel] = []

    def slow_open() -> grpc.aio.Channel:
        time.sleep(0.05)  # a channel that takes a moment to make widens the window
        opened.append(grpc.aio.insecure_channel("127.0.0.1:1"))
        return opened[-1]

    lazy = LazyChannel(slow_open)
    both_running = threading.Barrier(2)
    both_asked = threading.Barrier(2)
    outcomes: list[object] = []

    def first_call() -> None:
        async def main() -> None:
            both_running.wait()
            try:
                outcomes.append(lazy.get())
            except RuntimeError as error:
                outcomes.append(error)
            # This loop keeps running until the other thread has asked too.
            await asyncio.to_thread(both_asked.wait, 30)

        asyncio.run(main())

    threads = [threading.Thread(target=first_call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(opened) == 1
    assert sum(isinstance(o, RuntimeError) for o in outcomes) == 1  # the later loop


def test_the_lazy_channel_forwards_only_a_channels_own_names() -> None:
    lazy = LazyChannel(lambda: pytest.fail("nothing should open a channel"))
    assert not hasattr(lazy, "no_such")
    assert copy.copy(lazy) is not lazy
    assert not lazy.opened


@pytest.mark.parametrize("style", [profiles.STANDALONE, profiles.BEARER])
async def test_devos_factory_sends_the_token_in_either_style(
    keyed: tuple[int, str], style: str, unique: str
) -> None:
    port, key = keyed
    async with cairn.create_client_from_token(f"http://127.0.0.1:{port}", key, style) as client:
        assert await client.find_model(f"absent-{unique}") is None
    # What reaches a server (or a proxy in between) is the header of the style alone.
    received = await _headers_received(lambda url: cairn.create_client_from_token(url, key, style))
    if style == profiles.STANDALONE:
        expected, other = ("x-api-key", key), "authorization"
    else:
        expected, other = ("authorization", f"Bearer {key}"), "x-api-key"
    assert expected in received
    assert other not in {name for name, _ in received}
    async with cairn.create_client_from_token(f"http://127.0.0.1:{port}", "cairn_bad") as bad:
        with pytest.raises(UnauthenticatedError):
            await bad.get_models()


@pytest.mark.parametrize("style", [profiles.STANDALONE, profiles.BEARER])
async def test_a_key_read_with_its_newline_works_and_one_no_header_carries_is_refused(
    keyed: tuple[int, str], style: str, unique: str
) -> None:
    """A key read from a file (a Kubernetes secret made with --from-file) ends in a
    newline, which no header carries: every call raised grpc's raw ExecuteBatchError."""
    port, key = keyed
    url = f"http://127.0.0.1:{port}"
    for as_read in (key + "\n", key + "\r\n", f" {key}\t"):  # Unix, Windows, by hand
        async with cairn.create_client_from_token(url, as_read, style) as client:
            assert await client.find_model(f"absent-{unique}") is None
    with pytest.raises(ValueError, match="the API key holds characters") as refused:
        cairn.create_client_from_token(url, "cairn_s3cret\u00e9", style)
    assert "s3cret" not in str(refused.value)
    # Read as bytes, a key once failed with an AttributeError from deep in the client.
    with pytest.raises(TypeError, match="the API key is text") as mistyped:
        cairn.create_client_from_token(url, b"cairn_s3cret\n", style)  # type: ignore[arg-type]
    assert "s3cret" not in str(mistyped.value)


class _Recording(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self.metadata: list[tuple[str, str]] = []

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        self.metadata += list(details.invocation_metadata or ())
        return await continuation(details)


async def _headers_received(make: Any) -> list[tuple[str, str]]:
    """The metadata a server receives from a call of the client make(url) builds."""
    recording = _Recording()
    server = grpc.aio.server(interceptors=[recording])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with make(f"http://127.0.0.1:{port}") as client:
            with pytest.raises(cairn.exceptions.UnimplementedError):  # no service here
                await client.auth.get_projects()
    finally:
        await server.stop(grace=0)
    return recording.metadata


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


async def test_a_profiles_own_keys_given_to_the_factory_win_over_the_file(
    keyed: tuple[int, str], tmp_path: Path, unique: str
) -> None:
    """Only Client's keywords could be given: `url=`, `token=` (the profile's own keys,
    which the docs say win over the file's) were a TypeError of Client.__init__."""
    port, key = keyed
    file = _write_profiles(tmp_path / "profiles.ini", port, key)
    async with cairn.create_client_from_profile(path=file, token=key) as keyed_client:
        await keyed_client.registry.upsert_registered_model(RegisteredModel(f"o-{unique}"))
    # A url in place of the file's host, port and tls; no token in place of its token.
    moved = {"url": f"http://127.0.0.1:{port}", "token": None}
    async with cairn.create_client_from_profile("testing", file, **moved) as anonymous:
        assert anonymous._transport.timeout == 45  # the file's other keys kept
        with pytest.raises(UnauthenticatedError):
            await anonymous.get_models()

    def in_a_script() -> str:  # a script's thread; the server answers on the test's loop
        with sync.create_client_from_profile("testing", file, url=moved["url"]) as client:
            return str(client.get_model(f"o-{unique}").name)

    assert await asyncio.to_thread(in_a_script) == f"o-{unique}"
    with pytest.raises(profiles.ProfileError, match=r"\[testing\]: url: the URL is not"):
        cairn.create_client_from_profile("testing", file, url="ftp://127.0.0.1")


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
    tls_port: int,  # noqa: F811
    pki: dict[str, Path],  # noqa: F811
    tmp_path: Path,
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


@pytest.mark.parametrize(
    "make",
    [
        lambda: sync.Client("http://127.0.0.1:1"),
        lambda: sync.TrackingClient.insecure_connection("127.0.0.1", 1),
    ],
)
def test_a_sync_client_closes_twice_and_then_refuses_calls(make: Any) -> None:
    client = make()
    client.close()
    client.close()
    with client:  # and on leaving a `with`
        pass
    with pytest.raises(ClientClosedError):
        (client.tracking if isinstance(client, sync.Client) else client).search_experiments()
