"""The server's TLS, from the PEM files its settings name: gRPC's credentials for the
gRPC port, an SSLContext for any other (the byte endpoint)."""

from __future__ import annotations

import os
import ssl
import stat
from pathlib import Path

import grpc

from .config import Config
from .service import Unservable


def server_credentials(config: Config) -> grpc.ServerCredentials | None:
    """TLS credentials from the configured PEM files, or None to serve plaintext."""
    if not config.tls_cert_file:
        return None
    tls_context(config)  # the files' check: grpc's own would read as an address in use
    chain = Path(config.tls_cert_file).read_bytes()
    key = Path(config.tls_key_file).read_bytes()
    client_ca = Path(config.tls_client_ca_file).read_bytes() if config.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The server's TLS (and mTLS) from the configured PEM files, as the gRPC port
    serves it, for any other port of the server (the byte endpoint); None without a
    certificate. Raises Unservable naming the settings when the files do not make a
    server's TLS (a key of another certificate, a file that is no PEM, an encrypted
    key), or one cannot be read."""
    if not config.tls_cert_file:
        return None
    for setting, path in (
        ("CAIRN_TLS_CERT_FILE (--tls-cert-file)", config.tls_cert_file),
        ("CAIRN_TLS_KEY_FILE (--tls-key-file)", config.tls_key_file),
        ("CAIRN_TLS_CLIENT_CA_FILE (--tls-client-ca-file)", config.tls_client_ca_file),
    ):
        if path:
            _check_readable(setting, path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # as grpc's TLS, whatever the level
    # What the system's OpenSSL holds too weak (a 1024-bit RSA key, a SHA-1 signature)
    # grpc's own TLS serves: the check is of files that go together, not of strength.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    try:
        # An encrypted key is refused rather than prompted for on the terminal.
        context.load_cert_chain(config.tls_cert_file, config.tls_key_file, password=b"")
        if config.tls_client_ca_file:
            context.load_verify_locations(config.tls_client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
    except ssl.SSLError as error:
        raise Unservable(
            "the TLS files cannot serve (CAIRN_TLS_CERT_FILE, CAIRN_TLS_KEY_FILE, "
            f"CAIRN_TLS_CLIENT_CA_FILE): {error.reason or error}"
        ) from error
    return context


def _check_readable(setting: str, path: str) -> None:
    """Raises Unservable naming the setting of a file that cannot be opened: OpenSSL's
    own error, "[Errno 2] No such file or directory", named neither it nor the file.
    A pipe, a socket or a device is refused before it is opened: opening a named pipe
    no one writes to waits for ever, and the files are read more than once (here, by
    each port's TLS), which a pipe's bytes are not."""
    try:
        mode = os.stat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise OSError("a pipe, a socket or a device, where the server reads a file twice")
        with open(path, "rb"):
            pass
    except OSError as error:
        raise Unservable(
            f"the TLS file {path} cannot be read ({error.strerror or error}): set {setting} "
            "to a PEM file this server can read"
        ) from error
