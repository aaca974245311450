"""Checks of a Config beyond each setting's choices and bounds: settings together, hosts, S3."""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import urllib.parse
from collections.abc import Callable
from typing import NamedTuple

from .settings import ConfigError, Settings


def check_settings(config: Settings) -> None:
    """Raises ConfigError for the first setting, or settings together, these checks
    refuse; each setting has passed its own choices and bounds."""
    if config.db_pool_size < config.db_pool_min_size:
        raise ConfigError("CAIRN_DB_POOL_SIZE must be at least CAIRN_DB_POOL_MIN_SIZE")
    if bool(config.tls_cert_file) != bool(config.tls_key_file):
        raise ConfigError("CAIRN_TLS_CERT_FILE and CAIRN_TLS_KEY_FILE go together")
    if config.tls_client_ca_file and not config.tls_cert_file:
        raise ConfigError(
            "CAIRN_TLS_CLIENT_CA_FILE needs CAIRN_TLS_CERT_FILE and CAIRN_TLS_KEY_FILE"
        )
    # Before the check of open access, which reads the listen address.
    for name, address in (
        ("LISTEN", config.listen_address),
        ("METRICS", config.metrics_address),
        ("HEALTH", config.health_address),
    ):
        if (address or name == "LISTEN") and not _host_and_port(address):
            raise ConfigError(
                f"CAIRN_{name}_ADDRESS must be host:port with a port from 0 to 65535 "
                f"(0: any free one), e.g. 0.0.0.0:9090; not {address!r}"
            )
    if (
        config.auth == "none"
        and not config.allow_open_access
        and not is_loopback(config.listen_address)
    ):
        raise ConfigError(
            f"CAIRN_AUTH=none on {config.listen_address} would let anyone on the network do "
            "anything: set CAIRN_AUTH=api_key, listen on 127.0.0.1, or set "
            "CAIRN_ALLOW_OPEN_ACCESS=true if that is intended"
        )
    if not 1 <= config.presign_max_seconds <= 7 * 24 * 3600:
        raise ConfigError("CAIRN_PRESIGN_MAX_SECONDS must be from 1 to 604800 (7 days)")
    if config.artifact_max_completions < 1:
        raise ConfigError("CAIRN_ARTIFACT_MAX_COMPLETIONS must be at least 1")
    if not 0 <= config.artifact_direct_port <= 65535:
        raise ConfigError("CAIRN_ARTIFACT_DIRECT_PORT must be from 0 to 65535 (0: any free)")
    if config.artifact_direct_host and not _is_host(config.artifact_direct_host):
        raise ConfigError(
            "CAIRN_ARTIFACT_DIRECT_HOST must be a host name or an IP address, without a "
            f"scheme, port or path (clients connect to it); not {config.artifact_direct_host!r}"
        )
    _check_ports_apart(config)
    if not config.data_dir:
        raise ConfigError("CAIRN_DATA_DIR must not be empty (default: .cairn)")
    # Unsaid: it may hold a password.
    if not _sent_as_utf8(config.database_url):
        raise ConfigError(
            "CAIRN_DATABASE_URL's user, password, database and settings must be text UTF-8 "
            "can encode"
        )
    if config.artifact_backend == "s3":
        _check_s3(config)


def _check_ports_apart(config: Settings) -> None:
    """Raises ConfigError for two of the server's endpoints on one port of one host.
    Checked before anything starts: the second to bind failed as "the address is in
    use", blamed on CAIRN_LISTEN_ADDRESS, which sent the operator looking for another
    process."""
    endpoints = _endpoints(config)
    for i, ours in enumerate(endpoints):
        for theirs in endpoints[i + 1 :]:
            if ours.port and ours.port == theirs.port and _overlap(ours, theirs):
                raise ConfigError(
                    f"{ours.setting} ({ours.host}:{ours.port}) and {theirs.setting} "
                    f"({theirs.host}:{theirs.port}) take one port: give each a port of its "
                    "own (0: any free one)"
                )


class _Endpoint(NamedTuple):
    """A port the server listens on, and how it binds a host name: gRPC every address
    the name resolves to (serving when it binds any), the others the first address of
    the family they ask for (AF_UNSPEC: either)."""

    setting: str
    host: str
    port: int
    every_address: bool = True
    family: int = socket.AF_UNSPEC


def _endpoints(config: Settings) -> list[_Endpoint]:
    listen_host, _, listen_port = config.listen_address.rpartition(":")
    endpoints = [_Endpoint("CAIRN_LISTEN_ADDRESS", listen_host, int(listen_port))]
    if config.health_address:  # a gRPC server of its own
        host, _, port = config.health_address.rpartition(":")
        endpoints.append(_Endpoint("CAIRN_HEALTH_ADDRESS", host, int(port)))
    if config.metrics_address:  # prometheus' HTTP server: the first address of its host
        host, _, port = config.metrics_address.rpartition(":")
        endpoints.append(_Endpoint("CAIRN_METRICS_ADDRESS", host, int(port), False))
    # The byte endpoint listens on the gRPC host (only the filesystem backend has one),
    # on a socket of IPv6 for an address with a ":", else of IPv4.
    if config.artifact_direct and config.artifact_backend == "filesystem":
        family = socket.AF_INET6 if ":" in listen_host else socket.AF_INET
        direct = _Endpoint(
            "CAIRN_ARTIFACT_DIRECT_PORT", listen_host, config.artifact_direct_port, False, family
        )
        endpoints.append(direct)
    return endpoints


def _overlap(ours: _Endpoint, theirs: _Endpoint) -> bool:
    """Whether the two endpoints take one port twice: the same host, a name and an
    address it resolves to (localhost and 127.0.0.1), or a wildcard address and one of
    its family (every one for "::", which Linux binds IPv4's too). With localhost:P and
    the metrics at 127.0.0.1:P, gRPC took ::1 alone and its IPv4 clients reached the
    metrics."""
    if ours.host.strip("[]").lower() == theirs.host.strip("[]").lower():
        return True
    return any(
        a == b or _covers(a, b) or _covers(b, a) for a in _bound(ours) for b in _bound(theirs)
    )


_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _covers(wildcard: _Address, address: _Address) -> bool:
    return wildcard.is_unspecified and (wildcard.version == 6 or address.version == 4)


def _bound(endpoint: _Endpoint) -> set[_Address]:
    """The addresses the endpoint takes: an IPv4-mapped IPv6 address as its IPv4 one, a
    name as it binds one (nothing when it does not resolve: its bind fails, naming its
    setting)."""
    try:
        address = ipaddress.ip_address(endpoint.host.strip("[]"))
    except ValueError:
        found = _resolved(endpoint.host, endpoint.family)
        return set(found if endpoint.every_address else found[:1])
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return {mapped or address}


@functools.lru_cache(maxsize=16)
def _resolved(name: str, family: int) -> list[_Address]:
    """The addresses of name, in the resolver's order, as a listening socket asks."""
    try:
        found = socket.getaddrinfo(name, None, family, socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError):
        return []
    return [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in found]


def _check_s3(config: Settings) -> None:
    """Raises ConfigError for S3 settings the SDK would refuse. Checked before anything
    starts: with no endpoint, the server served and every artifact write answered
    UNAVAILABLE (OBJECT_STORE_UNAVAILABLE), which clients retry, while the janitor
    logged "No host specified"."""
    # The SDK's own checks, so that what passes here is what it takes; imported here,
    # as a filesystem server never needs it.
    from minio.helpers import BaseURL, check_bucket_name

    if not config.s3_endpoint.strip():
        raise ConfigError(
            "CAIRN_S3_ENDPOINT must name the store (host or host:port, e.g. minio:9000) "
            "when CAIRN_ARTIFACT_BACKEND=s3"
        )
    scheme = "https://" if config.s3_secure else "http://"
    for name, endpoint in (
        ("CAIRN_S3_ENDPOINT", config.s3_endpoint),
        ("CAIRN_S3_PUBLIC_ENDPOINT", config.s3_public_endpoint),
    ):
        if endpoint:
            message = (
                f"{name} must be host or host:port with no scheme or path (CAIRN_S3_SECURE "
                f"picks https or http), e.g. minio:9000; not {endpoint!r}"
            )
            # The SDK took hosts with spaces ("min io:9000") and empty ports ("minio:"),
            # which urllib3 refused at every request: the server served, and every
            # artifact write answered UNAVAILABLE.
            if not _is_endpoint(endpoint):
                raise ConfigError(message)
            _sdk_takes(functools.partial(BaseURL, scheme + endpoint, None), message)
    _sdk_takes(
        lambda: BaseURL(scheme + config.s3_endpoint, config.s3_region or None),
        f"CAIRN_S3_REGION must be a region name such as us-east-1, not {config.s3_region!r}",
    )
    _sdk_takes(
        lambda: check_bucket_name(config.s3_bucket),
        f"CAIRN_S3_BUCKET must be a bucket name of 3 to 63 letters, digits, '.', '-' or '_', "
        f"not {config.s3_bucket!r}",
    )
    _check_s3_prefix(config.s3_prefix)
    _check_s3_keys(config)


def _check_s3_prefix(prefix: str) -> None:
    """Raises ConfigError for a prefix the SDK refuses in every object name it begins
    (the server served, and every upload failed: INTERNAL for one UTF-8 cannot encode,
    UNAVAILABLE, retried by clients for ever, for a "." or ".." segment)."""
    from minio.helpers import check_object_name

    if not _is_utf8(prefix):
        raise ConfigError(f"CAIRN_S3_PREFIX must be text UTF-8 can encode, not {prefix!r}")
    # As S3Backend names objects: the prefix stripped of "/", then "/" and the key.
    if prefix.strip("/"):
        _sdk_takes(
            lambda: check_object_name(prefix.strip("/") + "/key"),
            f"CAIRN_S3_PREFIX must be a key prefix without '.' or '..' segments, not {prefix!r}",
        )


def _check_s3_keys(config: Settings) -> None:
    """Raises ConfigError for keys no request could be signed or sent with (the server
    served, and every upload answered UNAVAILABLE). Their values stay unsaid: secrets."""
    # The access key id goes in a header of every request, which http.client writes
    # as Latin-1 and refuses with a line break in it.
    access_key = config.s3_access_key
    if not (access_key.isascii() and access_key.isprintable()):
        raise ConfigError("CAIRN_S3_ACCESS_KEY must be printable ASCII (an access key id)")
    # The secret key is never sent: the SDK signs with its UTF-8 bytes.
    if not _is_utf8(config.s3_secret_key):
        raise ConfigError("CAIRN_S3_SECRET_KEY must be text UTF-8 can encode")


# Query parameters of a database URL that name files or sockets, which Python hands the
# system as the bytes they were: any bytes do.
_URL_PATHS = frozenset({"host", "passfile", "sslcert", "sslkey", "sslrootcert", "sslcrl"})


def _sent_as_utf8(url: str) -> bool:
    """Whether the parts of a database URL asyncpg sends PostgreSQL as UTF-8 are text it
    can encode (it failed inside the event loop's callback: a traceback logged, and the
    command said the connection was closed); a socket's or a file's path may hold any."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # "Invalid IPv6 URL": left to the check that says which URL
        return True
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    sent = [parts.username or "", parts.password or "", parts.path]
    sent += [value for name, value in query if name not in _URL_PATHS]
    return all(_is_utf8(text) for text in sent)


def _is_utf8(text: str) -> bool:
    """False for text holding lone surrogates: bytes of the environment that were no
    UTF-8, which Python keeps as such (PEP 383)."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _is_endpoint(endpoint: str) -> bool:
    """host or host:port, the host as _is_host takes it and the port from 1 to 65535."""
    host, colon, port = endpoint.rpartition(":")
    if not colon or endpoint.endswith("]"):  # no port; "[::1]", say
        host, port = endpoint, ""
    elif not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        return False
    return _is_host(host)


def _sdk_takes(check: Callable[[], object], message: str) -> None:
    try:
        check()
    except ValueError as error:
        raise ConfigError(f"{message} ({error})") from None


def _host_and_port(address: str) -> bool:
    # Checked before anything starts: grpc took 99999 as 34463 (modulo 65536) and "abc"
    # as an address in use, once the database had started.
    host, colon, port = address.rpartition(":")
    port_taken = port.isascii() and port.isdigit() and int(port) <= 65535
    return bool(colon) and _is_host(host) and port_taken


def _is_host(host: str) -> bool:
    """A DNS name (ASCII labels of letters, digits, hyphens and underscores) or an IP
    address, an IPv6 one in brackets or not (both of them: clients bracket "[::1" as
    "[[::1]")."""
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        ipaddress.ip_address(host[1:-1] if bracketed else host)
        return True
    except ValueError:
        labels = host.removesuffix(".").split(".")
        return all(0 < len(label) < 64 and _LABEL.fullmatch(label) for label in labels)


_LABEL = re.compile(r"[A-Za-z0-9_-]+")


def is_loopback(address: str) -> bool:
    """Whether a host:port listen address is reachable from this machine only."""
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
