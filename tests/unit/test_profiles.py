"""Profiles and cairn.Client's address: what connects over TLS and what is refused."""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

import cairn
from cairn import profiles
from cairn.profiles import ProfileError, parse_profile


def test_a_host_profile_without_tls_connects_over_tls() -> None:
    # Like cairn.Client(host): a forgotten key must not send the token in the clear.
    for values in (
        {"host": "cairn.example.com", "port": "443", "token": "cairn_x_y"},
        {"host": "cairn.example.com", "ca": "/etc/ssl/ca.pem"},
        {"host": "cairn.example.com"},
    ):
        profile = parse_profile("prod", values)
        assert profile.tls, values
    assert parse_profile("p", {"host": "h"}).port == profiles.DEFAULT_TLS_PORT
    plain = parse_profile("dev", {"host": "127.0.0.1", "tls": "false"})
    assert (plain.tls, plain.port) == (False, profiles.DEFAULT_PLAINTEXT_PORT)


def test_a_ca_on_a_plaintext_connection_is_refused() -> None:
    with pytest.raises(ProfileError, match="ca is for TLS"):
        parse_profile("p", {"host": "h", "tls": "false", "ca": "/ca.pem"})
    with pytest.raises(ProfileError, match="ca is for TLS"):
        parse_profile("p", {"url": "http://h:443", "ca": "/ca.pem"})


@pytest.mark.parametrize("key", ["host", "port", "tls"])
def test_url_and_the_keys_it_replaces_are_refused_together(key: str) -> None:
    with pytest.raises(ProfileError, match=f"url places the server; {key} cannot"):
        parse_profile("p", {"url": "https://h", key: "false" if key == "tls" else "1"})


def test_a_url_whose_port_is_not_a_number_is_a_profile_error() -> None:
    with pytest.raises(ProfileError, match=r"\[p\]: url: the URL's port is not a number"):
        parse_profile("p", {"url": "http://h:abc"})


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("https://user:pw@cairn.example.com", "holds a user or password"),
        ("https://token@cairn.example.com:443", "holds a user or password"),
        ("http://h:0", "port is not a number from 1 to 65535"),
        ("https://h:0", "port is not a number from 1 to 65535"),
        ("https://h/path", "is not http://host"),
    ],
)
def test_a_url_the_client_refuses_is_a_profile_error(url: str, refusal: str) -> None:
    """The URL's user and password were dropped in silence, and port 0 became the
    default port, where cairn.Client refuses both."""
    with pytest.raises(ValueError, match=refusal):
        cairn.Client(url)
    with pytest.raises(ProfileError, match=rf"\[p\]: url: .*{refusal}") as refused:
        parse_profile("p", {"url": url})
    assert "pw" not in str(refused.value)


def test_a_token_the_client_refuses_is_a_profile_error() -> None:
    """It was read, and failed when the client was made, naming no file or section."""
    with pytest.raises(ProfileError, match=r"\[p\]: token: the API key is 10000 characters"):
        parse_profile("p", {"host": "h", "token": "k" * 10_000})
    with pytest.raises(ProfileError, match=r"\[p\]: token: the API key holds characters"):
        parse_profile("p", {"host": "h", "token": "k\x7f"})


def _channel_kind(client: cairn.Client) -> str:
    # The lazy channel's opener names the grpc function it will call.
    names = client._transport.channel._open.__code__.co_names
    return "secure" if "secure_channel" in names else "insecure"


def test_a_host_profile_without_tls_makes_a_tls_client() -> None:
    profile = parse_profile("prod", {"host": "cairn.example.com", "token": "cairn_x_y"})
    assert _channel_kind(cairn._client.client_from_profile(profile)) == "secure"


def test_client_refuses_https_with_is_secure_false() -> None:
    with pytest.raises(ValueError, match="https:// address with is_secure=False"):
        cairn.Client("https://cairn.example.com", is_secure=False, user_token="k")
    assert _channel_kind(cairn.Client("cairn.example.com")) == "secure"
    assert _channel_kind(cairn.Client("http://cairn.example.com")) == "insecure"


@pytest.mark.parametrize("certificate", ["custom_ca", "client_cert", "client_key"])
def test_client_refuses_certificates_without_tls(certificate: str) -> None:
    pem: dict[str, Any] = {certificate: b"pem"}
    with pytest.raises(ValueError, match="need a TLS connection"):
        cairn.Client("http://cairn.example.com:443", **pem)
    with pytest.raises(ValueError, match="need a TLS connection"):
        cairn.Client("cairn.example.com", is_secure=False, **pem)


SECRET = "cairn_0123456789ab_SUPERSECRET"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (f"[default]\nurl = http://h\ntoken {SECRET}\n", "line 3: not `key = value`"),
        (f"[d]\ntoken = {SECRET}\ntoken = {SECRET}2\n", "line 3: key 'token' twice in [d]"),
        (f"token = {SECRET}\n[d]\n", "line 1: a key before any [section]"),
    ],
)
def test_a_malformed_file_is_reported_without_its_text(tmp_path, text: str, where: str) -> None:
    file = tmp_path / "profiles.ini"
    file.write_text(text)
    file.chmod(0o600)
    with pytest.raises(ProfileError) as raised:
        profiles.load_profile("default", file)
    assert where in str(raised.value)
    assert "SUPERSECRET" not in str(raised.value)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (b"[default]\nurl = http://h\nproject = caf\xe9\n", "line 3 is not UTF-8 text"),
        (b"[default]\nhost = h\nport = 99999\ntls = false\n", "port must be a number from 1 to"),
        (b"[default]\nhost = h\nport = -1\ntls = false\n", "port must be a number from 1 to"),
        ("[default]\nhost = h\nport = \u0663\ntls = false\n".encode(), "port must be a number"),
        (b"[default]\nhost = h\x01x\ntls = false\n", "host: the address holds '\\x01'"),
        (b"[default]\nhost = h:1\nport = 2\ntls = false\n", "host: 'h:1' names port 1"),
        (b"[default]\nurl = http://h\nregistry_address = r:x\n", "registry_address: the port"),
        (b"[default]\nurl = http://h\ntoken = abc\x01SUPERSECRET\n", "token: the API key holds"),
    ],
    ids=[
        "latin-1",
        "port-past-65535",
        "port-below-1",
        "arabic-digit",
        "host",
        "two-ports",
        "service",
        "token",
    ],
)
def test_a_value_the_client_would_refuse_is_a_profile_error_naming_the_file(
    tmp_path, text: bytes, where: str
) -> None:
    """A file in Latin-1 raised a bare UnicodeDecodeError, and a port past 65535, an
    address or a token the client refuses a ValueError, naming neither file nor section."""
    file = tmp_path / "profiles.ini"
    file.write_bytes(text)
    file.chmod(0o600)
    with pytest.raises(ProfileError) as raised:
        cairn.create_client_from_profile("default", file)
    assert str(file) in str(raised.value) and where in str(raised.value)
    assert "[default]" in str(raised.value) or "UTF-8" in str(raised.value)
    assert "SUPERSECRET" not in str(raised.value)


def test_a_profiles_repr_hides_its_token() -> None:
    profile = parse_profile("p", {"host": "h", "token": SECRET})
    assert profile.token == SECRET
    assert "SUPERSECRET" not in repr(profile)


def test_a_token_in_a_file_others_can_read_is_warned_about(tmp_path) -> None:
    file = tmp_path / "profiles.ini"
    file.write_text(f"[default]\nurl = http://h\n[prod]\nhost = h\ntoken = {SECRET}\n")
    file.chmod(0o644)
    with pytest.warns(profiles.ProfileFileWarning, match="chmod 600"):
        profiles.load_profile("default", file)
    file.chmod(0o600)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        profiles.load_profile("prod", file)


def _target(client: cairn.Client) -> str:
    cells = client._transport.channel._open.__closure__ or ()
    return next(c.cell_contents for c in cells if isinstance(c.cell_contents, str))


@pytest.mark.parametrize(
    ("address", "target"),
    [
        ("localhost:50051", "localhost:50051"),
        ("localhost", "localhost:443"),
        ("[::1]:8443", "[::1]:8443"),
        ("[::1]", "[::1]:443"),
        ("::1", "[::1]:443"),
        ("https://[::1]:8443", "[::1]:8443"),
        ("http://cairn.example.com:50051/", "cairn.example.com:50051"),
    ],
)
def test_client_reads_the_port_of_a_bare_address(address: str, target: str) -> None:
    assert _target(cairn.Client(address)) == target


@pytest.mark.parametrize("address", ["localhost:http", "[::1]x", "[::1", "h:0"])
def test_client_refuses_an_address_it_cannot_read(address: str) -> None:
    with pytest.raises(ValueError, match=r"port|address"):
        cairn.Client(address)


def test_s3_uri_from_writes_the_path_as_kubeflow_does(monkeypatch: pytest.MonkeyPatch) -> None:
    from cairn.utils import s3_uri_from

    for variable in ("AWS_S3_ENDPOINT", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(variable, raising=False)
    assert s3_uri_from("models/my model+v1.onnx", "b") == "s3://b/models/my model+v1.onnx"
    assert s3_uri_from("/build/hal.onnx", "b") == "s3://b/build/hal.onnx"


@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "inf", "1e300", "soon"])
def test_a_timeout_that_no_call_could_meet_is_refused(timeout: str) -> None:
    """Each was taken, and every call then failed DEADLINE_EXCEEDED at once."""
    with pytest.raises(ProfileError, match="timeout must be seconds above 0"):
        parse_profile("p", {"host": "h", "timeout": timeout})
    if timeout != "soon":
        with pytest.raises(ValueError, match="timeout: must be seconds above 0"):
            cairn.TrackingClient.insecure_connection("127.0.0.1", 1, timeout=float(timeout))


def test_a_timeout_is_seconds_or_none() -> None:
    assert parse_profile("p", {"host": "h", "timeout": "2.5"}).timeout == 2.5
    assert parse_profile("p", {"host": "h", "timeout": "none"}).timeout is None


@pytest.mark.parametrize("kind", ["larger", "device"])
def test_a_profile_file_past_a_mebibyte_is_refused_read_no_further(
    tmp_path: Path, kind: str
) -> None:
    """/dev/zero was read until memory ran out (1.2 GB in 6 s), and a file of any size
    was read whole before it was parsed."""
    file = tmp_path / "profiles.ini" if kind == "larger" else Path("/dev/zero")
    if kind == "larger":
        file.write_text("[default]\nurl = http://h\n" + "# padding\n" * 120_000)
    with pytest.raises(ProfileError) as raised:
        profiles.load_profile("default", file)
    assert str(raised.value) == f"{file} cannot be read (more than 1048576 bytes)"


def test_a_profile_file_may_be_a_pipe(tmp_path: Path) -> None:
    """As `--profiles <(make-profiles)` gives one: a profile's token need not be on disk."""
    fifo = tmp_path / "profiles.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=("[default]\nurl = http://h\n",))
    writer.start()
    try:
        assert profiles.load_profile("default", fifo).host == "h"
    finally:
        writer.join()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # The file's url taken apart, the placement given in its place.
        ({"tls": False}, ("h.example", 8443, False, "bearer")),
        ({"host": "other"}, ("other", 8443, True, "bearer")),
        ({"url": "http://x:1"}, ("x", 1, False, "bearer")),
        # The token style under either name, in place of the file's.
        ({"auth_type": "standalone"}, ("h.example", 8443, True, "standalone")),
        ({"auth_type": None}, ("h.example", 8443, True, "bearer")),
    ],
)
def test_overrides_take_the_files_place_keeping_the_rest(
    tmp_path: Path, overrides: dict[str, object], expected: tuple[object, ...]
) -> None:
    """A host or tls given dropped the file's url whole: `tls=False` beside
    `url = https://h.example:8443` was "needs url, or host", `host=` connected over TLS
    to port 443 whatever the url said."""
    file = tmp_path / "profiles.ini"
    file.write_text("[a]\nurl = https://h.example:8443\ntoken_style = bearer\n")
    read = profiles.load_profile("a", file, overrides=overrides)
    assert (read.host, read.port, read.tls, read.token_style) == expected
