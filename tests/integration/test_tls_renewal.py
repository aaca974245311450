"""TLS files renewed while a server runs, as the kubelet renews a mounted Secret's: each
new connection, on the gRPC port and on the byte endpoint, is served the files as they
are then."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

import cairn
from cairn.exceptions import UnavailableError
from cairn_server import catalog
from cairn_server.artifacts.direct import ByteEndpoint
from cairn_server.common import tls
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer
from cairn_server.common.tls import ServingTls
from tests.conftest import with_overrides
from tests.integration.test_tls import _certificate, _works, _write, pki  # noqa: F401 (fixture)

NAMES = ("tls.crt", "tls.key")


@pytest.fixture(autouse=True)
def looked_at_every_handshake(monkeypatch: pytest.MonkeyPatch) -> None:
    """The files looked at before every handshake, not once a second: what each
    handshake is served follows from what the files held before it."""
    monkeypatch.setattr(tls, "CHECK_SECONDS", 0.0)


def _mount(volume: Path, version: str, certificate: Any, key: Any) -> None:
    """The files of a Secret's volume, as the kubelet writes them: each name a link into
    `..data`, itself a link to the folder of the current version, swapped in one rename."""
    folder = volume / f"..{version}"
    folder.mkdir()
    for name, written in zip(NAMES, _write(folder, "tls", certificate, key), strict=True):
        written.rename(folder / name)
    (volume / "..data_tmp").symlink_to(folder.name)
    os.replace(volume / "..data_tmp", volume / "..data")
    for name in NAMES:
        if not (volume / name).is_symlink():
            (volume / name).symlink_to(f"..data/{name}")


@pytest.fixture
def renewable(tmp_path: Path, pki: dict[str, Path]) -> tuple[Path, dict[str, str]]:  # noqa: F811
    """A Secret's volume holding the test CA's server certificate; the TLS settings
    naming its files."""
    volume = tmp_path / "tls"
    volume.mkdir()
    folder = volume / "..first"
    folder.mkdir()
    shutil.copy(pki["server_cert"], folder / "tls.crt")
    shutil.copy(pki["server_key"], folder / "tls.key")
    (volume / "..data").symlink_to(folder.name)
    for name in NAMES:
        (volume / name).symlink_to(f"..data/{name}")
    settings = {"tls_cert_file": str(volume / "tls.crt"), "tls_key_file": str(volume / "tls.key")}
    return volume, settings


def _renew(volume: Path) -> Path:
    """Renews the volume's certificate with one of a new CA's; that CA's file."""
    renewed_ca = _certificate("renewed CA", None, ca=True)
    ca_file, _ = _write(volume.parent, "renewed-ca", *renewed_ca)
    _mount(volume, "renewed", *_certificate("localhost", renewed_ca, ca=False))
    return ca_file


def _client(port: int, ca: Path, timeout: float | None = None) -> cairn.TrackingClient:
    return cairn.TrackingClient.secure_connection(
        "localhost", port, user_token="t", custom_ca=str(ca), timeout=timeout
    )


async def test_renewed_files_are_served_on_the_grpc_port_without_a_restart(
    config: Config,
    pool: asyncpg.Pool,
    pki: dict[str, Path],  # noqa: F811
    renewable: tuple[Path, dict[str, str]],
) -> None:
    """The server read its certificate once, at its start: a renewed Secret was served
    only once the pod restarted, past the old certificate's expiry if nobody did."""
    volume, settings = renewable
    server = CairnServer(with_overrides(config, **settings), catalog.select(["tracking"]), pool)
    port = await server.start()
    try:
        assert await _works(_client(port, pki["ca"]))
        renewed_ca = _renew(volume)
        assert await _works(_client(port, renewed_ca))
        with pytest.raises(UnavailableError):  # the old certificate is served no more
            await _works(_client(port, pki["ca"], timeout=2))
    finally:
        await server.stop(grace=0)


@pytest.fixture
def endpoint(config: Config, renewable: tuple[Path, dict[str, str]]) -> Iterator[int]:
    """The byte endpoint's port, serving the renewable volume's TLS."""
    tls = ServingTls(with_overrides(config, **renewable[1]))
    served = ByteEndpoint("127.0.0.1", 0, transfers=None, tls=tls.context)  # type: ignore[arg-type]
    yield served.port
    served.close()


def _handshake(port: int, ca: Path) -> str:
    """The common name of the certificate the endpoint shows a client trusting ca."""
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as connection,
        context.wrap_socket(connection, server_hostname="localhost") as secured,
    ):
        shown = secured.getpeercert(binary_form=True)
    assert shown is not None
    subject = x509.load_der_x509_certificate(shown).subject
    return str(subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_renewed_files_are_served_on_the_byte_endpoint_without_a_restart(
    endpoint: int,
    pki: dict[str, Path],  # noqa: F811
    renewable: tuple[Path, dict[str, str]],
) -> None:
    assert _handshake(endpoint, pki["ca"]) == "localhost"
    renewed_ca = _renew(renewable[0])
    assert _handshake(endpoint, renewed_ca) == "localhost"
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(endpoint, pki["ca"])


def test_files_that_do_not_go_together_leave_the_earlier_ones_serving(
    endpoint: int,
    pki: dict[str, Path],  # noqa: F811
    renewable: tuple[Path, dict[str, str]],
) -> None:
    """A key renewed before its certificate (files copied in one by one, by hand) is
    no certificate's: the files read before serve until the pair is whole again."""
    volume = renewable[0]
    renewed_ca = _certificate("renewed CA", None, ca=True)
    ca_file, _ = _write(volume.parent, "renewed-ca", *renewed_ca)
    cert, key = _write(volume.parent, "renewed", *_certificate("localhost", renewed_ca, ca=False))
    for name in NAMES:
        os.replace(volume / name, volume.parent / f"old-{name}")  # the links, by hand
    shutil.copy(key, volume / "tls.key")
    shutil.copy(pki["server_cert"], volume / "tls.crt")  # the old certificate, the new key
    assert _handshake(endpoint, pki["ca"]) == "localhost"
    # The pair whole again, written aside and renamed in: a file of the same size
    # rewritten in place within one tick of the clock would look unchanged.
    shutil.copy(cert, volume / "tls.crt.new")
    os.replace(volume / "tls.crt.new", volume / "tls.crt")
    assert _handshake(endpoint, ca_file) == "localhost"


def test_the_files_are_looked_at_once_a_second_at_most(
    config: Config, renewable: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """gRPC asks before every handshake, under a lock of its own: a crowd of clients
    reconnecting at once waited on the files' stats in turn."""
    monkeypatch.undo()  # the module's CHECK_SECONDS, not the fixture's 0
    now = [1000.0]
    serving = ServingTls(with_overrides(config, **renewable[1]), clock=lambda: now[0])
    first = serving.context()
    _renew(renewable[0])
    now[0] += tls.CHECK_SECONDS / 2
    assert serving.context() is first  # not looked at yet
    now[0] += tls.CHECK_SECONDS
    assert serving.context() is not first
