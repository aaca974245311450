"""The addresses a client accepts: every target a gRPC user writes, with or without
its port, and one address per service for services deployed apart."""

from __future__ import annotations

import pytest

import cairn
from cairn._transport import RoutedChannel, _target


@pytest.mark.parametrize(
    ("host", "port", "target"),
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
    ],
)
def test_every_grpc_target_is_read_as_grpc_reads_it(host: str, port: int, target: str) -> None:
    assert _target(host, port) == target


@pytest.mark.parametrize("host", ["localhost:50052", "[::1]:50052", "dns:///svc:50052"])
def test_an_address_naming_another_port_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match="names port 50052"):
        _target(host, 50051)


def _targets(client: cairn.Client) -> dict[str, str]:
    channel = client._transport.channel
    assert isinstance(channel, RoutedChannel)
    lazies = {"": channel._default, **channel._routes}
    return {
        name: next(
            c.cell_contents
            for c in lazy._open.__closure__ or ()
            if isinstance(c.cell_contents, str)
        )
        for name, lazy in lazies.items()
    }


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
