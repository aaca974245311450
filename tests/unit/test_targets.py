"""The addresses a client accepts: every target a gRPC user writes, with or without
its port, and one address per service for services deployed apart."""

from __future__ import annotations

import re

import pytest

import cairn
from cairn._channels import RoutedChannel
from cairn._targets import parse, target


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("localhost", 50051, "localhost:50051"),
        ("localhost:50051", 50051, "localhost:50051"),
        ("::1", 8443, "[::1]:8443"),
        ("[::1]", 8443, "[::1]:8443"),
        ("[::1]:8443", 8443, "[::1]:8443"),
        (
            "dns:///cairn-tracking-headless.cairn.svc",
            50051,
            "dns:///cairn-tracking-headless.cairn.svc:50051",
        ),
        (
            "dns:///cairn-tracking-headless.cairn.svc:50051",
            50051,
            "dns:///cairn-tracking-headless.cairn.svc:50051",
        ),
        ("dns://10.0.0.10/cairn-tracking", 50051, "dns://10.0.0.10/cairn-tracking:50051"),
        ("dns:cairn-tracking", 50051, "dns:cairn-tracking:50051"),
        ("dns:///[::1]", 50051, "dns:///[::1]:50051"),
        ("unix:/run/cairn.sock", 50051, "unix:/run/cairn.sock"),
        ("unix:///run/cairn.sock", 50051, "unix:///run/cairn.sock"),
        ("unix-abstract:cairn", 50051, "unix-abstract:cairn"),
        ("ipv4:10.0.0.1:50051,10.0.0.2:50051", 50051, "ipv4:10.0.0.1:50051,10.0.0.2:50051"),
        ("ipv4:10.0.0.1", 8000, "ipv4:10.0.0.1:8000"),
        ("ipv4:10.0.0.1,10.0.0.2:8000", 8000, "ipv4:10.0.0.1:8000,10.0.0.2:8000"),
        ("ipv4:10.0.0.1:8001,10.0.0.2:8002", 8001, "ipv4:10.0.0.1:8001,10.0.0.2:8002"),
        ("ipv6:::1", 8000, "ipv6:[::1]:8000"),
        ("ipv6:::1,[fe80::1]:8000", 8000, "ipv6:[::1]:8000,[fe80::1]:8000"),
        ("http://h", 8080, "h:8080"),
        ("http://h:8080", 8080, "h:8080"),
        ("http://[::1]:8080/", None, "[::1]:8080"),
    ],
)
def test_every_grpc_target_is_read_as_grpc_reads_it(host: str, port: int, expected: str) -> None:
    assert target(host, False, port) == expected


@pytest.mark.parametrize("host", ["localhost:50052", "[::1]:50052", "dns:///svc:50052"])
def test_an_address_naming_another_port_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match="names port 50052"):
        target(host, False, 50051)


@pytest.mark.parametrize(
    ("address", "tls", "expected"),
    [
        ("cairn.example.com", True, "cairn.example.com:443"),
        ("cairn.example.com", False, "cairn.example.com:50051"),
        ("cairn.example.com:8443", True, "cairn.example.com:8443"),
        (
            "dns:///cairn-tracking-headless.cairn.svc",
            True,
            "dns:///cairn-tracking-headless.cairn.svc:443",
        ),
        ("ipv4:10.0.0.1", True, "ipv4:10.0.0.1:443"),
        ("ipv4:10.0.0.1", False, "ipv4:10.0.0.1:50051"),
        ("https://cairn.example.com", True, "cairn.example.com:443"),
    ],
)
def test_a_port_left_unnamed_is_443_with_tls_and_50051_without(
    address: str, tls: bool, expected: str
) -> None:
    assert target(address, tls) == expected


@pytest.mark.parametrize(
    ("address", "tls", "port", "error"),
    [
        ("http://h:8080", True, None, "http:// address for a TLS connection"),
        ("https://h", False, None, "https:// address for a plaintext connection"),
        ("grpc://h:50051", False, None, "scheme 'grpc'"),
        ("http://h/path", False, None, "is not http://host"),
        ("http://h:port", False, None, "port is not a number"),
        ("h:port", False, None, "the port of the address is not a number"),
        ("dns:///svc:port", False, None, "the port of the address is not a number"),
        ("h:\u00b2", False, None, "the port of the address is not a number"),
        ("ipv4:10.0.0.1:\u0663", False, None, "the port of entry 1 of the address list"),
        ("ipv4:10.0.0.1:port", False, None, "the port of entry 1 of the address list"),
        ("ipv4:10.0.0.1,[::1", False, None, "entry 2 of the address list is not [address]"),
        ("h", False, "port", "'port'"),
        ("h", False, 70000, "not a number from 1 to 65535"),
        ("ipv4:10.0.0.1,", False, None, "entry 2 of the address list is empty"),
        ("ipv4:10.0.0.1:1:pw", False, None, "entry 1 of the address list is not an IPv4"),
        ("ipv4:localhost:1", False, None, "entry 1 of the address list is not an IPv4"),
        ("ipv4:256.1.1.1:1", False, None, "entry 1 of the address list is not an IPv4"),
        ("ipv4:[::1]:1", False, None, "entry 1 of the address list is not an IPv4"),
        ("ipv6:[10.0.0.1]:1", False, None, "entry 1 of the address list is not an IPv6"),
        # Taken as a bare IPv6 address, as any address of two colons was, or as a name
        # without a host: each failed only once called (UNAVAILABLE, status 1, the
        # address printed back).
        ("svc:s3cret:50051", False, None, "neither host[:port] nor an IPv6 address"),
        ("::::", False, None, "neither host[:port] nor an IPv6 address"),
        (":5", False, None, "the address names no host"),
        ("[svc]:50051", False, None, "neither host[:port] nor an IPv6 address"),
    ],
)
def test_an_address_the_client_cannot_read_is_refused_clearly(
    address: str, tls: bool, port: int | str | None, error: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        target(address, tls, port)


def test_parse_reads_every_entry_of_an_address_list() -> None:
    """parse read the first entry alone: `cairn --address ipv4:127.0.0.1:1,h:x` was
    taken, then failed when the client was made (status 1, not a usage error)."""
    with pytest.raises(ValueError, match="the port of entry 2 of the address list"):
        parse("ipv4:10.0.0.1:1,h:x")
    with pytest.raises(ValueError, match="entry 3 of the address list is empty"):
        parse("ipv6:[::1]:1,::2,")
    with pytest.raises(ValueError, match="entry 2 of the address list is not an IPv4 address"):
        parse("ipv4:10.0.0.1:1,10.0.0.2:1:pw")  # a colon too many: taken as IPv6, unread
    assert parse("ipv4:10.0.0.1:1,10.0.0.2").port == 1


@pytest.mark.parametrize(
    "address",
    [
        "admin:s3cret",
        "svc:s3cret:50051",
        "[::1]:s3cret",
        "[::1]s3cret",
        "dns:///admin:s3cret",
        "dns://s3cret",
        "ipv4:1.2.3.4,admin:s3cret",
        "ipv4:s3cret,",
        "ipv6:[::1]:s3cret",
    ],
)
def test_an_address_is_never_quoted_in_its_error(address: str) -> None:
    """A port, an entry or a dns: name that could not be read quoted the whole address:
    `the port of 'admin:s3cret' ('s3cret')`, though what reads as a port may be a
    password, as a URL's credentials are, which are never quoted."""
    with pytest.raises(ValueError) as refused:
        target(address, False)
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize(
    "address",
    [
        "ops:s3cret@127.0.0.1:1",
        "ops:s3cret@h",
        "ops@h:1",
        "dns:///ops:s3cret@h:1",
        "dns://8.8.8.8/ops:s3cret@h",
        "dns://ops:s3cret@8.8.8.8/h:1",
        "ipv4:1.2.3.4,ops:s3cret@5.6.7.8:1",
        "ipv4:ops:s3cret@1.2.3.4",
        "ipv6:[::1]:1,ops:s3cret@h",
        "http://ops:s3cret@h:1",
        "https://ops:s3cret@h",
    ],
)
def test_an_address_with_credentials_is_refused_without_quoting_them(address: str) -> None:
    """Read as a bare IPv6 address, or as a host and a port, it was quoted back in an
    error (grpc's resolution failure, or the port's), password and all; a dns: target
    carried it to grpc, which quoted it; a URL dropped it in silence."""
    for port in (None, "x"):  # a port's own error quoted the address
        with pytest.raises(ValueError, match="holds a user or password") as refused:
            target(address, False, port)
        assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize("address", ["unix:/run/cairn@1.sock", "unix-abstract:cairn@1"])
def test_a_socket_path_may_hold_an_at_sign(address: str) -> None:
    assert target(address, False) == address


@pytest.mark.parametrize(
    "address",
    [
        "http://127.0.0.1\x00.example.com:51921",
        "http://127.0.0.1\x00:51921",
        "127.0.0.1\x01:51921",
        "cairn.internal\x00.example.com",
        "dns:///h\x7f:1",
        "ipv4:10.0.0.1:1,10.0.0.2\n:1",
        " 127.0.0.1:1",
        "h :1",
        "unix:/run/cairn\x00/other.sock",
        "unix-abstract:cairn\x1b",
    ],
)
def test_an_address_holding_a_control_character_or_a_space_is_refused(address: str) -> None:
    """gRPC's core reads a target as a C string: "http://127.0.0.1\\x00.example.com:51921"
    dialled 127.0.0.1:443 in plaintext, another server than asked, and "\\x01" went to the
    resolver."""
    with pytest.raises(ValueError, match="no address holds a control character or a space"):
        cairn.Client(address)
    with pytest.raises(ValueError, match="no address holds a control character or a space"):
        target(address, False)


def test_a_socket_path_may_hold_a_space() -> None:
    assert target("unix:/run/my cairn/cairn.sock", False) == "unix:/run/my cairn/cairn.sock"


def test_secure_connection_takes_the_port_the_target_names() -> None:
    """secure_connection's port defaults to the target's own, else 443."""
    for address, expected in [
        (
            "dns:///cairn-tracking-headless.cairn.svc:50051",
            "dns:///cairn-tracking-headless.cairn.svc:50051",
        ),
        ("cairn.example.com:8443", "cairn.example.com:8443"),
        ("cairn.example.com", "cairn.example.com:443"),
    ]:
        client = cairn.TrackingClient.secure_connection(address, user_token="k")
        assert _target_of(client._transport.channel) == expected
    insecure = cairn.TrackingClient.insecure_connection("ipv4:10.0.0.1")
    assert _target_of(insecure._transport.channel) == "ipv4:10.0.0.1:50051"


def test_a_service_address_is_read_like_the_server_address() -> None:
    with pytest.raises(ValueError, match="https:// address for a plaintext connection"):
        cairn.Client(
            "localhost:50051", is_secure=False, service_addresses={"artifacts": "https://a"}
        )
    with pytest.raises(ValueError, match="scheme 'ftp'"):
        cairn.Client("localhost:50051", is_secure=False, service_addresses={"artifacts": "ftp://a"})
    client = cairn.Client(
        "http://localhost:8080",
        service_addresses={"artifacts": "http://a", "registry": "ipv4:10.0.0.1"},
    )
    assert _targets(client) == {
        "": "localhost:8080",
        "cairn.artifacts.v1.ArtifactService": "a:8080",
        "cairn.registry.v1.RegistryService": "ipv4:10.0.0.1:8080",
    }


def _target_of(lazy: object) -> str:
    return next(
        c.cell_contents
        for c in lazy._open.__closure__ or ()  # type: ignore[attr-defined]
        if isinstance(c.cell_contents, str)
    )


def _targets(client: cairn.Client) -> dict[str, str]:
    channel = client._transport.channel
    assert isinstance(channel, RoutedChannel)
    lazies = {"": channel._default, **channel._routes}
    return {name: _target_of(lazy) for name, lazy in lazies.items()}


def test_client_takes_an_address_per_service() -> None:
    client = cairn.Client(
        "dns:///cairn-tracking-headless.cairn.svc",
        is_secure=False,
        service_addresses={
            "registry": "cairn-registry.cairn.svc",
            "artifacts": "cairn-artifacts.cairn.svc:8443",
        },
    )
    assert _targets(client) == {
        "": "dns:///cairn-tracking-headless.cairn.svc:50051",
        "cairn.registry.v1.RegistryService": "cairn-registry.cairn.svc:50051",
        "cairn.artifacts.v1.ArtifactService": "cairn-artifacts.cairn.svc:8443",
    }


def test_client_reads_the_port_of_a_dns_target() -> None:
    client = cairn.Client(
        "dns:///cairn-tracking:8443", service_addresses={"artifacts": "cairn-artifacts"}
    )
    assert _targets(client)["cairn.artifacts.v1.ArtifactService"] == "cairn-artifacts:8443"


def test_an_unknown_service_name_is_refused() -> None:
    with pytest.raises(ValueError, match="artifact"):
        cairn.Client("localhost:50051", is_secure=False, service_addresses={"artifact": "h"})
