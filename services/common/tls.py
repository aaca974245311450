"""The server's TLS, from the PEM files its settings name: gRPC's credentials for the
gRPC port, an SSLContext for any other (the byte endpoint).

Both serve the files as they are at each new connection's handshake. A Secret renewed
by cert-manager reaches a pod as new files behind the same paths (the kubelet swaps the
volume's links), which a server that read them once kept serving until it was
restarted, past the old certificate's expiry."""

from __future__ import annotations

import os
import ssl
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import grpc

from . import logs
from .config import Config
from .service import Unservable

_log = logs.get("cairn.server")
# The files are looked at once a second at most: gRPC asks before every handshake, under
# a lock of its own, and a reconnecting crowd of clients waited on the stats in turn.
# The kubelet takes about a minute to swap a renewed Secret's files in.
CHECK_SECONDS = 1.0
# Of each file: device, inode, modification time and size. A swapped link changes the
# inode; a file written in place changes its time or size.
_Stamp = tuple[tuple[int, int, int, int], ...]


class _Loaded(NamedTuple):
    stamp: _Stamp | None
    context: ssl.SSLContext
    configuration: grpc.ServerCertificateConfiguration


class ServingTls:
    """The TLS files as they are now: read again, for the next connection, when one of
    them changed (looked at every CHECK_SECONDS at most). Files that no longer go
    together (a key renewed before its certificate) leave the earlier ones serving
    until they do."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic) -> None:
        """Raises Unservable naming the settings when the files cannot serve."""
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._loaded = _load(config, _stamp(config))
        self._checked = clock()
        self._refused: _Stamp | None = None
        self._given = self._loaded  # the configuration gRPC serves

    @classmethod
    def of(cls, config: Config) -> ServingTls | None:
        """The server's TLS; None without a certificate, to serve plaintext."""
        return cls(config) if config.tls_cert_file else None

    def credentials(self) -> grpc.ServerCredentials:
        """gRPC's credentials, which ask before each handshake for files renewed since."""
        return grpc.dynamic_ssl_server_credentials(
            self._given.configuration,
            self._renewed,
            require_client_authentication=bool(self._config.tls_client_ca_file),
        )

    def context(self) -> ssl.SSLContext:
        """The SSLContext of the files as they are now."""
        return self._current().context

    def _renewed(self) -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC before each handshake: None keeps what it serves.
        loaded = self._current()
        if loaded is self._given:
            return None
        self._given = loaded
        return loaded.configuration

    def _current(self) -> _Loaded:
        with self._lock:
            now = self._clock()
            if now - self._checked < CHECK_SECONDS:
                return self._loaded
            self._checked = now
            stamp = _stamp(self._config)
            if stamp is None or stamp in (self._loaded.stamp, self._refused):
                return self._loaded
            try:
                loaded = _load(self._config, stamp)
            except Unservable as error:
                self._refused = stamp
                _log.warning("the TLS files changed and cannot serve", error=str(error))
                return self._loaded
            if _stamp(self._config) == stamp:  # else changed while read: the next asks again
                self._loaded = loaded
                _log.info("TLS files read again", cert_file=self._config.tls_cert_file)
            return self._loaded


def server_credentials(config: Config) -> grpc.ServerCredentials | None:
    """The gRPC port's credentials, or None to serve plaintext."""
    tls = ServingTls.of(config)
    return None if tls is None else tls.credentials()


def _load(config: Config, stamp: _Stamp | None) -> _Loaded:
    context = _context(config)  # the files' check: grpc's would read as an address in use
    try:
        chain = Path(config.tls_cert_file).read_bytes()
        key = Path(config.tls_key_file).read_bytes()
        ca = config.tls_client_ca_file
        client_ca = Path(ca).read_bytes() if ca else None
    except OSError as error:  # swapped away since the check
        raise Unservable(f"a TLS file cannot be read ({error.strerror or error})") from error
    configuration = grpc.ssl_server_certificate_configuration([(key, chain)], client_ca)
    return _Loaded(stamp, context, configuration)


def _stamp(config: Config) -> _Stamp | None:
    """The files' stamps; None while one is away (between a link's removal and its
    replacement), which keeps the files read before."""
    paths = [config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file]
    try:
        found = [os.stat(path) for path in paths if path]
    except OSError:
        return None
    return tuple((f.st_dev, f.st_ino, f.st_mtime_ns, f.st_size) for f in found)


def _context(config: Config) -> ssl.SSLContext:
    """The server's TLS (and mTLS) from the configured PEM files, as the gRPC port
    serves it, for any other port of the server (the byte endpoint). Raises Unservable
    naming the settings when the files do not make a server's TLS (a key of another
    certificate, a file that is no PEM, an encrypted key), or one cannot be read."""
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
