"""TLS and mutual TLS between the client and a server, with certificates made here."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

import cairn
from cairn.exceptions import UnavailableError
from cairn_server import catalog
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer
from cairn_server.common.service import Unservable
from cairn_server.common.settings import ConfigError
from tests.conftest import with_overrides

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _certificate(
    name: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    ca: bool,
    key: PrivateKey | None = None,
):
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    certificate = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    return certificate, key


def _write(
    directory: Path, name: str, certificate: x509.Certificate, key: PrivateKey
) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca = _certificate("cairn test CA", None, ca=True)
    files = {}
    files["ca"], files["ca_key"] = _write(directory, "ca", *ca)
    files["other_ca"], _ = _write(directory, "other-ca", *_certificate("another CA", None, ca=True))
    files["server_cert"], files["server_key"] = _write(
        directory, "server", *_certificate("localhost", ca, ca=False)
    )
    files["client_cert"], files["client_key"] = _write(
        directory, "client", *_certificate("client", ca, ca=False)
    )
    return files


async def _serve(
    config: Config, pool: asyncpg.Pool, services: Sequence[str] = ("tracking",)
) -> tuple[CairnServer, int]:
    server = CairnServer(
        with_overrides(config, artifact_direct_port=0), catalog.select(list(services)), pool
    )
    return server, await server.start()


# The artifacts service's byte endpoint (on by default, with the filesystem backend)
# serves the gRPC port's TLS on a port of its own, and checks its files alike.
EVERY_TLS_PORT = pytest.mark.parametrize("services", [["tracking"], ["artifacts"]])


async def _refused(config: Config, pool: asyncpg.Pool, services: list[str]) -> Unservable:
    """What keeps a server of services with config from starting."""
    with pytest.raises(Unservable) as refused:
        server, _ = await _serve(config, pool, services)
        await server.stop(grace=0)
    return refused.value


@pytest.fixture
async def tls_port(config: Config, pool: asyncpg.Pool, pki: dict[str, Path]) -> AsyncIterator[int]:
    tls = with_overrides(
        config, tls_cert_file=str(pki["server_cert"]), tls_key_file=str(pki["server_key"])
    )
    server, port = await _serve(tls, pool)
    yield port
    await server.stop(grace=0)


@pytest.fixture
async def mtls_port(config: Config, pool: asyncpg.Pool, pki: dict[str, Path]) -> AsyncIterator[int]:
    mtls = with_overrides(
        config,
        tls_cert_file=str(pki["server_cert"]),
        tls_key_file=str(pki["server_key"]),
        tls_client_ca_file=str(pki["ca"]),
    )
    server, port = await _serve(mtls, pool)
    yield port
    await server.stop(grace=0)


async def _works(client: cairn.TrackingClient) -> bool:
    async with client:
        return await client.get_experiment_by_name("no-such-experiment", timeout=5) is None


async def test_tls_with_a_custom_ca(tls_port: int, pki: dict[str, Path]) -> None:
    client = cairn.TrackingClient.secure_connection(
        "localhost", tls_port, user_token="t", custom_ca=str(pki["ca"])
    )
    assert await _works(client)


@pytest.mark.parametrize("form", ["localhost:{port}", "dns:///localhost:{port}", "ipv4:127.0.0.1"])
async def test_tls_to_a_target_that_names_its_port(
    tls_port: int, pki: dict[str, Path], form: str
) -> None:
    """secure_connection's port is the target's own unless given (443 only when the
    target names none); an ipv4: list's entries without a port take the port given."""
    address = form.format(port=tls_port)
    port = tls_port if address.startswith("ipv4:") else None
    client = cairn.TrackingClient.secure_connection(
        address, port, user_token="t", custom_ca=str(pki["ca"])
    )
    assert await _works(client)


async def test_plaintext_and_unknown_ca_are_refused(tls_port: int, pki: dict[str, Path]) -> None:
    with pytest.raises(UnavailableError):
        await _works(cairn.TrackingClient.insecure_connection("localhost", tls_port, timeout=2))
    with pytest.raises(UnavailableError):
        await _works(
            cairn.TrackingClient.secure_connection(
                "localhost",
                tls_port,
                user_token="t",
                custom_ca=pki["other_ca"].read_bytes(),
                timeout=2,
            )
        )


async def test_mutual_tls_needs_a_client_certificate(mtls_port: int, pki: dict[str, Path]) -> None:
    with pytest.raises(UnavailableError):
        await _works(
            cairn.TrackingClient.secure_connection(
                "localhost", mtls_port, user_token="t", custom_ca=str(pki["ca"]), timeout=2
            )
        )
    client = cairn.TrackingClient.secure_connection(
        "localhost",
        mtls_port,
        user_token="t",
        custom_ca=str(pki["ca"]),
        client_cert=str(pki["client_cert"]),
        client_key=str(pki["client_key"]),
    )
    assert await _works(client)


async def test_a_client_certificate_and_key_given_as_pipes_are_read_once(
    mtls_port: int, pki: dict[str, Path], tmp_path: Path
) -> None:
    """A pipe holds its PEM once. The client read the certificate and key for gRPC,
    then again for the byte endpoint's TLS: the second read waited for a writer, and at
    the pipe's end failed the client's making with `SSLError: PEM lib`."""
    made, writers = threading.Event(), []
    for name in ("client_cert", "client_key"):
        fifo = tmp_path / f"{name}.fifo"
        os.mkfifo(fifo)

        def write_once(fifo: Path = fifo, pem: bytes = pki[name].read_bytes()) -> None:
            fifo.write_bytes(pem)
            if not made.wait(30):  # a second open waits for a writer: give it the end
                with contextlib.suppress(OSError):  # ENXIO: no second open waits
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

        writers.append(threading.Thread(target=write_once))
        writers[-1].start()
    try:
        client = cairn.TrackingClient.secure_connection(
            "localhost",
            mtls_port,
            user_token="t",
            custom_ca=str(pki["ca"]),
            client_cert=str(tmp_path / "client_cert.fifo"),
            client_key=str(tmp_path / "client_key.fifo"),
        )
    finally:
        made.set()
        for writer in writers:
            writer.join()
    assert await _works(client)


@EVERY_TLS_PORT
@pytest.mark.parametrize("key", ["client_key", "not_pem"])
async def test_a_key_that_is_not_the_certificates_is_named_not_a_port_in_use(
    config: Config,
    pool: asyncpg.Pool,
    pki: dict[str, Path],
    key: str,
    tmp_path: Path,
    services: list[str],
) -> None:
    """Another certificate's key, or a file that is no PEM at all, was reported as
    "cannot listen on ...: the address is in use or not available"; by the byte
    endpoint, as OpenSSL's bare "[SSL] PEM lib" or "KEY_VALUES_MISMATCH"."""
    (tmp_path / "not_pem").write_text("not a key")
    key_file = pki.get(key, tmp_path / key)
    tls = with_overrides(config, tls_cert_file=str(pki["server_cert"]), tls_key_file=str(key_file))
    refused = str(await _refused(tls, pool, services))
    assert "CAIRN_TLS_CERT_FILE" in refused and "CAIRN_TLS_KEY_FILE" in refused
    assert "in use" not in refused


@EVERY_TLS_PORT
@pytest.mark.parametrize("broken", ["encrypted_key", "client_ca"])
async def test_an_encrypted_key_or_a_client_ca_that_is_no_pem_is_named(
    config: Config,
    pool: asyncpg.Pool,
    pki: dict[str, Path],
    broken: str,
    tmp_path: Path,
    services: list[str],
) -> None:
    """An encrypted key is refused, not prompted for on the terminal (the byte endpoint
    prompted, and waited for ever at a terminal); a client CA file that is no PEM was
    reported as an address in use."""
    settings = {"tls_cert_file": str(pki["server_cert"]), "tls_key_file": str(pki["server_key"])}
    if broken == "encrypted_key":
        key = serialization.load_pem_private_key(pki["server_key"].read_bytes(), None)
        encrypted = tmp_path / "encrypted.key"
        encrypted.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"passphrase"),
            )
        )
        settings["tls_key_file"] = str(encrypted)
    else:
        (tmp_path / "ca.pem").write_text("not a certificate")
        settings["tls_client_ca_file"] = str(tmp_path / "ca.pem")
    refused = await _refused(with_overrides(config, **settings), pool, services)
    assert "the TLS files cannot serve" in str(refused)


@pytest.mark.parametrize(
    ("setting", "flag"),
    [
        ("tls_cert_file", "CAIRN_TLS_CERT_FILE (--tls-cert-file)"),
        ("tls_key_file", "CAIRN_TLS_KEY_FILE (--tls-key-file)"),
        ("tls_client_ca_file", "CAIRN_TLS_CLIENT_CA_FILE (--tls-client-ca-file)"),
    ],
)
@pytest.mark.parametrize("missing", ["no file", "a directory", "a pipe"])
async def test_a_tls_file_that_cannot_be_read_is_named_with_its_setting(
    config: Config,
    pool: asyncpg.Pool,
    pki: dict[str, Path],
    tmp_path: Path,
    setting: str,
    flag: str,
    missing: str,
) -> None:
    """A path with no file (a typo in a Secret's mount path) ended the server with
    "[Errno 2] No such file or directory", naming neither the file nor its setting. A
    named pipe no one writes to held the server's start for ever, deaf to SIGTERM; one
    that was written to was read dry by the first of the server's reads."""
    path = {"no file": tmp_path / "absent.pem", "a directory": tmp_path}.get(missing)
    if path is None:
        path = tmp_path / "fifo.pem"
        os.mkfifo(path)
    settings = {"tls_cert_file": str(pki["server_cert"]), "tls_key_file": str(pki["server_key"])}
    settings[setting] = str(path)
    server = CairnServer(with_overrides(config, **settings), catalog.select(["tracking"]), pool)
    with pytest.raises(Unservable) as refused:
        await server.start()
    assert str(refused.value).startswith(f"the TLS file {path} cannot be read (")
    assert str(refused.value).endswith(f"set {flag} to a PEM file this server can read")


@EVERY_TLS_PORT
async def test_a_key_the_system_openssl_holds_weak_still_serves(
    config: Config, pool: asyncpg.Pool, pki: dict[str, Path], tmp_path: Path, services: list[str]
) -> None:
    """The check of the TLS files refused a 1024-bit RSA key (EE_KEY_TOO_SMALL, the
    security level of the system's OpenSSL), which grpc serves: a server that started
    before the check stopped starting, and one with the byte endpoint still did. The
    check is of files that go together."""
    ca_key = serialization.load_pem_private_key(pki["ca_key"].read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = (x509.load_pem_x509_certificate(pki["ca"].read_bytes()), ca_key)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cert, key = _write(tmp_path, "weak", *_certificate("localhost", ca, False, weak))
    tls = with_overrides(config, tls_cert_file=str(cert), tls_key_file=str(key))
    server, port = await _serve(tls, pool, services)
    try:
        if services == ["tracking"]:
            client = cairn.TrackingClient.secure_connection(
                "localhost", port, user_token="t", custom_ca=str(pki["ca"])
            )
            assert await _works(client)
    finally:
        await server.stop(grace=0)


def test_tls_settings_must_come_together() -> None:
    with pytest.raises(ConfigError, match="go together"):
        Config(tls_cert_file="a.crt")
    with pytest.raises(ConfigError, match="needs CAIRN_TLS_CERT_FILE"):
        Config(tls_client_ca_file="ca.crt")


async def test_a_plaintext_probe_port_answers_health_only(
    config: Config, pool: asyncpg.Pool, pki: dict[str, Path]
) -> None:
    import socket

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from cairn.tracking.v1 import tracking_service_pb2, tracking_service_pb2_grpc

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        probe_port = sock.getsockname()[1]
    tls = with_overrides(
        config,
        tls_cert_file=str(pki["server_cert"]),
        tls_key_file=str(pki["server_key"]),
        health_address=f"127.0.0.1:{probe_port}",
    )
    server, _ = await _serve(tls, pool)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{probe_port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="cairn.tracking.v1.TrackingService"),
                timeout=5,
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await tracking_service_pb2_grpc.TrackingServiceStub(channel).GetRun(
                    tracking_service_pb2.GetRunRequest(run_id="0" * 32), timeout=5
                )
            assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(grace=0)


async def test_api_keys_over_tls(
    config: Config, pool: asyncpg.Pool, pki: dict[str, Path], unique: str
) -> None:
    from cairn.exceptions import UnauthenticatedError
    from cairn_server.auth.store import AuthStore

    key, _ = await AuthStore(pool).create_key(f"tls-{unique}", "k", None, global_admin=True)
    guarded = with_overrides(
        config,
        auth="api_key",
        tls_cert_file=str(pki["server_cert"]),
        tls_key_file=str(pki["server_key"]),
    )
    server, port = await _serve(guarded, pool)
    try:
        assert await _works(
            cairn.TrackingClient.secure_connection(
                "localhost", port, user_token=key, custom_ca=str(pki["ca"])
            )
        )
        with pytest.raises(UnauthenticatedError):
            await _works(
                cairn.TrackingClient.secure_connection(
                    "localhost", port, user_token=key[:-1], custom_ca=str(pki["ca"])
                )
            )
    finally:
        await server.stop(grace=0)
