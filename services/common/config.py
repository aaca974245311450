"""Configuration from CAIRN_* environment variables and command-line flags.

Every setting is declared once, in `Config`'s fields: the environment variable, the flag
and the row of the configuration table in docs/configuration.md all derive from it.
A flag wins over the environment, which wins over the default.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "CAIRN_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A setting has a value it cannot take."""


# Longest retention or janitor age taken: far past any real need, and far inside what
# PostgreSQL intervals (`$1 * interval '1 second'` overflowed past about 5e15 s) and
# Python's timedelta and dates (`now - min_age` overflowed past about 6e10 s) hold.
TEN_YEARS_SECONDS = 10 * 365 * 86400
# PostgreSQL's statement_timeout (milliseconds) and work_mem (kB), and gRPC's message
# length options, are C ints.
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Bounds:
    """The values a number setting takes: least to most, and 0 as well when 0 turns
    the setting off. `note` explains the numbers where they are not plain."""

    least: float
    most: float = math.inf
    note: str = ""
    zero_is_off: bool = False

    def allow(self, value: float) -> bool:
        return (self.zero_is_off and value == 0) or self.least <= value <= self.most

    def __str__(self) -> str:
        span = f"at least {_number(self.least)}"
        if self.most != math.inf:
            span = f"from {_number(self.least)} to {_number(self.most)}"
        if self.note:
            span += f" ({self.note})"
        return f"0 (off) or {span}" if self.zero_is_off else span


def _number(value: float) -> str:
    """315360000 rather than 315360000.0 or 3.1536e+08; 1e+16 rather than 17 digits."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _setting(
    default: Any,
    help: str,
    *,
    choices: Sequence[str] = (),
    secret: bool = False,
    bounds: Bounds | None = None,
) -> Any:
    if bounds is not None:
        help += f"; {bounds}"
    return field(
        default=default,
        # A secret stays out of repr too: a traceback that shows locals would print it.
        repr=not secret,
        metadata={"help": help, "choices": choices, "secret": secret, "bounds": bounds},
    )


# Request ids are pruned four times per retention: under a minute, an idle server prunes
# almost without rest (every 0.25 ms at 0.001 s), and a retry after a brief outage may
# come after its request id was forgotten.
_RETENTION = Bounds(60, TEN_YEARS_SECONDS, "10 years")


@dataclass(frozen=True)
class Config:
    """Settings of a Cairn server process, all services alike."""

    listen_address: str = _setting("127.0.0.1:50051", "host:port the gRPC server listens on")
    database_url: str = _setting(
        "",
        "PostgreSQL URL (postgresql://user:pass@host:5432/db); empty starts an embedded "
        "PostgreSQL under the data directory",
        secret=True,
    )
    data_dir: str = _setting(".cairn", "directory for the embedded PostgreSQL and artifacts")
    db_pool_min_size: int = _setting(
        1,
        "connections the pool keeps open when idle, at most CAIRN_DB_POOL_SIZE",
        bounds=Bounds(0),
    )
    db_pool_size: int = _setting(
        10,
        "most connections the pool opens; metric-history streams take at most half of them",
        # asyncpg sets up every slot at start: 5,000,000 took 790 MB before serving, and
        # a PostgreSQL serves far fewer connections (max_connections is 100 by default).
        bounds=Bounds(1, 10_000, "the pool sets up each at start"),
    )
    db_acquire_timeout_seconds: float = _setting(
        5.0,
        "longest wait for a free pool connection; then the call is UNAVAILABLE "
        "(DATABASE_BUSY) instead of waiting out its deadline",
    )
    db_statement_timeout_seconds: float = _setting(
        30.0,
        "longest one SQL statement of a call may run, planning included; then the call "
        "is RESOURCE_EXHAUSTED (STATEMENT_TIMEOUT). Migrations, start-up checks and a "
        "few long statements (a garbage collection's removal of runs, a recursive "
        "artifact delete, the pruning of request ids) run without it; a garbage "
        "collection's other statements run with it (docs/operations.md)",
        # Below 1 ms, PostgreSQL's milliseconds rounded to 0, which is no timeout at all.
        bounds=Bounds(0.001, INT32_MAX // 1000, "24 days, PostgreSQL's most", zero_is_off=True),
    )
    db_work_mem_kib: int = _setting(
        16384,
        "memory one sort or hash of a statement may take before it spills to disk "
        "(PostgreSQL work_mem), set on every pool connection",
        bounds=Bounds(64, INT32_MAX, "PostgreSQL's range"),
    )
    stream_stall_seconds: float = _setting(
        60.0,
        "longest a metric-history stream, which holds a database connection and its "
        "snapshot, waits for its client to take one message (32,768 points); then it "
        "ends RESOURCE_EXHAUSTED (STREAM_STALLED) and frees the connection",
    )
    migrate_on_start: bool = _setting(True, "apply pending migrations when a service starts")
    artifact_backend: str = _setting(
        "filesystem", "where artifacts are stored", choices=("filesystem", "s3")
    )
    artifact_root: str = _setting(
        "", "filesystem backend: root directory; empty means <data_dir>/artifacts"
    )
    s3_endpoint: str = _setting(
        "",
        "S3 backend: host or host:port of the S3/MinIO endpoint, no scheme (see "
        "CAIRN_S3_SECURE); the S3 backend needs it",
    )
    s3_public_endpoint: str = _setting(
        "",
        "S3 backend: host:port clients reach the store at, which presigned URLs (direct "
        "transfer, CreatePresignedUrl) are signed for; empty: CAIRN_S3_ENDPOINT",
    )
    s3_bucket: str = _setting("cairn", "S3 backend: bucket")
    s3_prefix: str = _setting(
        "", "S3 backend: key prefix of everything Cairn stores (give Cairn its own)"
    )
    s3_region: str = _setting("", "S3 backend: region; empty lets the SDK discover it")
    s3_access_key: str = _setting("", "S3 backend: access key id", secret=True)
    s3_secret_key: str = _setting("", "S3 backend: secret access key", secret=True)
    s3_secure: bool = _setting(True, "S3 backend: use TLS to reach the endpoint")
    s3_timeout_seconds: float = _setting(
        60.0,
        "S3 backend: longest wait for the store to answer a request or send the next bytes "
        "of one (connecting: at most 5 s); then the call is UNAVAILABLE "
        "(OBJECT_STORE_UNAVAILABLE) rather than waiting on a store that stopped answering",
        # A socket's timeout overflows past about 9e9 s, at the first request.
        bounds=Bounds(0.001, 86400, "a day"),
    )
    artifact_janitor_interval_seconds: float = _setting(
        3600.0,
        "seconds between passes of the artifact janitor, which also runs at start",
        # Under a second, the janitor's passes (each lists and deletes) follow each other
        # without rest on an idle server.
        bounds=Bounds(1, TEN_YEARS_SECONDS, "10 years", zero_is_off=True),
    )
    artifact_janitor_min_age_seconds: float = _setting(
        86400.0,
        "age after which the janitor removes unreferenced bytes and discards unfinished "
        "uploads (counted from a presigned PUT URL's expiry); longer than any upload takes",
        bounds=Bounds(0, TEN_YEARS_SECONDS, "10 years"),
    )
    artifact_direct: bool = _setting(
        True,
        "serve direct transfers: large artifacts move outside gRPC, over plain HTTP/1.1 on a "
        "byte endpoint of their own (filesystem backend) or through presigned URLs of the "
        "store (S3), authorized by the gRPC service (docs/artifacts.md)",
    )
    artifact_direct_port: int = _setting(
        0, "port of the direct-transfer byte endpoint, on the gRPC host; 0 picks a free one"
    )
    artifact_direct_host: str = _setting(
        "",
        "host name or IP address (no scheme or port) clients are told to reach the byte "
        "endpoint at; empty: the host they reached the gRPC service at",
    )
    artifact_max_completions: int = _setting(
        4,
        "S3 direct uploads a process completes or confirms at once (each reads its object "
        "back on one of the 32 threads the artifact service's calls to the store share); "
        "one more waits up to 5 s for a slot, then is RESOURCE_EXHAUSTED (COMPLETIONS_BUSY), "
        "which the client retries with backoff",
    )
    presign_max_seconds: int = _setting(
        3600, "longest lifetime of a presigned URL; at most 604800 (7 days, S3's limit)"
    )
    request_id_retention_seconds: float = _setting(
        3600.0,
        "how long a write's request id is remembered, so that a retry within it gets the "
        "first answer instead of applying the write again (LogMetric's included; LogBatch's "
        "request_id field: see the next)",
        bounds=_RETENTION,
    )
    batch_id_retention_seconds: float = _setting(
        30 * 86400.0,
        "how long LogBatch's request ids are remembered: the window in which a run's "
        "journal (kept through an outage) can be synced exactly once",
        bounds=_RETENTION,
    )
    log_level: str = _setting(
        "info", "least severe level logged", choices=("debug", "info", "warning", "error")
    )
    log_format: str = _setting(
        "json",
        "json for machines (one object a line, Python libraries' lines and warnings too; "
        "gRPC's C core writes its own), console for people",
        choices=("json", "console"),
    )
    max_message_bytes: int = _setting(
        16 * 1024 * 1024,
        "largest gRPC message received or sent; a run may hold a quarter of it, and "
        "tracking does not start while a stored run would not fit one",
        bounds=Bounds(1024 * 1024, INT32_MAX, "1 MiB to 2 GiB less a byte, gRPC's most"),
    )
    shutdown_grace_seconds: float = _setting(
        10.0,
        "on SIGTERM/SIGINT, how long in-flight calls may take to finish; a second signal "
        "stops at once",
        # Bounded so that a client trickling bytes cannot hold a stopping server for ever.
        bounds=Bounds(0, 3600, "an hour"),
    )
    keepalive_seconds: float = _setting(
        60.0,
        "how long a connection may stay quiet before the server pings it; one that does "
        "not answer within as long again, and at least a minute (a slow link's answer "
        "waits behind the bytes it sends), is closed as a paused or vanished client's: "
        "its calls cancelled, the answers it did not read let go",
        bounds=Bounds(1, 7200, "two hours"),
    )
    tls_cert_file: str = _setting(
        "", "PEM server certificate (chain); with CAIRN_TLS_KEY_FILE, serve TLS only"
    )
    tls_key_file: str = _setting("", "PEM private key of the server certificate", secret=True)
    tls_client_ca_file: str = _setting(
        "", "PEM CA bundle; when set, clients must present a certificate it signed (mTLS)"
    )
    health_address: str = _setting(
        "",
        "host:port of a plaintext port answering gRPC health checks only (for probes "
        "that cannot speak TLS); empty: none",
    )
    health_probe_interval_seconds: float = _setting(
        1.0,
        "how often health probes the database (whether it answers and takes writes, over "
        "a connection of its own); "
        "two probes in a row that disagree with the health reported change it; "
        "a migration run probes as often, and two unanswered in a row give it up",
        # A shorter interval makes an idle server a loop of probes.
        bounds=Bounds(0.1),
    )
    health_probe_timeout_seconds: float = _setting(
        2.0,
        "longest a health probe waits to connect, then for its answer; past it the "
        "database counts as unreachable (raise it for a database across a slow link)",
    )
    metrics_address: str = _setting(
        "", "host:port of the Prometheus /metrics endpoint (HTTP); empty turns it off"
    )
    auth: str = _setting(
        "none",
        "api_key: every call needs an API key and a role; none: everyone is a global "
        "admin, allowed on a loopback listen address only",
        choices=("none", "api_key"),
    )
    allow_open_access: bool = _setting(
        False,
        "let CAIRN_AUTH=none serve on a non-loopback address: anyone who reaches it "
        "can do anything",
    )
    auth_failure_limit: int = _setting(
        20, "failed authentications a client address may make per window before it is refused"
    )
    auth_failure_window_seconds: float = _setting(
        60.0, "length of that window; a refused address may try again after it"
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_setting(f, getattr(self, f.name))
        if self.db_pool_size < self.db_pool_min_size:
            raise ConfigError("CAIRN_DB_POOL_SIZE must be at least CAIRN_DB_POOL_MIN_SIZE")
        if self.db_acquire_timeout_seconds <= 0 or self.stream_stall_seconds <= 0:
            raise ConfigError(
                "CAIRN_DB_ACQUIRE_TIMEOUT_SECONDS and CAIRN_STREAM_STALL_SECONDS must be positive"
            )
        if self.health_probe_timeout_seconds <= 0:
            raise ConfigError("CAIRN_HEALTH_PROBE_TIMEOUT_SECONDS must be positive")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("CAIRN_TLS_CERT_FILE and CAIRN_TLS_KEY_FILE go together")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ConfigError("CAIRN_TLS_CLIENT_CA_FILE needs CAIRN_TLS_CERT_FILE and _KEY_FILE")
        # Before the check of open access, which reads the listen address.
        for name, address in (
            ("LISTEN", self.listen_address),
            ("METRICS", self.metrics_address),
            ("HEALTH", self.health_address),
        ):
            if (address or name == "LISTEN") and not _host_and_port(address):
                raise ConfigError(
                    f"CAIRN_{name}_ADDRESS must be host:port with a port from 0 to 65535 "
                    f"(0: any free one), e.g. 0.0.0.0:9090; not {address!r}"
                )
        if (
            self.auth == "none"
            and not self.allow_open_access
            and not is_loopback(self.listen_address)
        ):
            raise ConfigError(
                f"CAIRN_AUTH=none on {self.listen_address} would let anyone on the network do "
                "anything: set CAIRN_AUTH=api_key, listen on 127.0.0.1, or set "
                "CAIRN_ALLOW_OPEN_ACCESS=true if that is intended"
            )
        if not 1 <= self.presign_max_seconds <= 7 * 24 * 3600:
            raise ConfigError("CAIRN_PRESIGN_MAX_SECONDS must be from 1 to 604800 (7 days)")
        if self.artifact_max_completions < 1:
            raise ConfigError("CAIRN_ARTIFACT_MAX_COMPLETIONS must be at least 1")
        if self.auth_failure_limit < 1 or self.auth_failure_window_seconds <= 0:
            raise ConfigError("CAIRN_AUTH_FAILURE_LIMIT and _WINDOW_SECONDS must be positive")
        if not 0 <= self.artifact_direct_port <= 65535:
            raise ConfigError("CAIRN_ARTIFACT_DIRECT_PORT must be from 0 to 65535 (0: any free)")
        if self.artifact_direct_host and not _is_host(self.artifact_direct_host):
            raise ConfigError(
                "CAIRN_ARTIFACT_DIRECT_HOST must be a host name or an IP address, without a "
                f"scheme, port or path (clients connect to it); not {self.artifact_direct_host!r}"
            )
        _check_ports_apart(self)
        if not self.data_dir:
            raise ConfigError("CAIRN_DATA_DIR must not be empty (default: .cairn)")
        if self.artifact_backend == "s3":
            _check_s3(self)

    @property
    def artifact_dir(self) -> Path:
        return Path(self.artifact_root or Path(self.data_dir) / "artifacts")

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict, with secrets masked, for logging."""
        return {
            f.name: (
                "***" if f.metadata["secret"] and getattr(self, f.name) else getattr(self, f.name)
            )
            for f in dataclasses.fields(self)
        }


def _check_setting(f: dataclasses.Field[Any], value: Any) -> None:
    """Raises ConfigError for a value outside the setting's choices or bounds."""
    choices, bounds = f.metadata["choices"], f.metadata["bounds"]
    if choices and value not in choices:
        raise ConfigError(f"{env_name(f.name)} must be one of {', '.join(choices)}")
    # nan passes every bound (each comparison with it is false).
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{env_name(f.name)} must be a finite number, not {value}")
    if bounds is not None and not bounds.allow(value):
        raise ConfigError(f"{env_name(f.name)} must be {bounds}, not {_number(value)}")


def _check_ports_apart(config: Config) -> None:
    """Raises ConfigError for two of the server's endpoints on one port of one host.
    Checked before anything starts: the second to bind failed as "the address is in
    use", blamed on CAIRN_LISTEN_ADDRESS, which sent the operator looking for another
    process."""
    endpoints = _endpoints(config)
    for i, (name, host, port) in enumerate(endpoints):
        for other, other_host, other_port in endpoints[i + 1 :]:
            if port and port == other_port and _overlap(host, other_host):
                raise ConfigError(
                    f"{name} ({host}:{port}) and {other} ({other_host}:{port}) take one "
                    "port: give each a port of its own (0: any free one)"
                )


def _endpoints(config: Config) -> list[tuple[str, str, int]]:
    """The setting, host and port of each endpoint the server listens on."""
    listen_host, _, listen_port = config.listen_address.rpartition(":")
    endpoints = [("CAIRN_LISTEN_ADDRESS", listen_host, int(listen_port))]
    for name, address in (
        ("CAIRN_HEALTH_ADDRESS", config.health_address),
        ("CAIRN_METRICS_ADDRESS", config.metrics_address),
    ):
        if address:
            host, _, port = address.rpartition(":")
            endpoints.append((name, host, int(port)))
    # The byte endpoint listens on the gRPC host; only the filesystem backend has one.
    if config.artifact_direct and config.artifact_backend == "filesystem":
        endpoints.append(("CAIRN_ARTIFACT_DIRECT_PORT", listen_host, config.artifact_direct_port))
    return endpoints


def _overlap(host: str, other: str) -> bool:
    """Whether listening on both hosts takes one port twice: the same host, or a
    wildcard address and one of its family (every one for "::", which Linux binds
    IPv4's too)."""
    host, other = host.strip("[]").lower(), other.strip("[]").lower()
    return host == other or _covers(host, other) or _covers(other, host)


def _covers(wildcard: str, host: str) -> bool:
    try:
        address = ipaddress.ip_address(wildcard)
    except ValueError:
        return False
    if not address.is_unspecified:
        return False
    if address.version == 6:
        return True
    try:
        return ipaddress.ip_address(host).version == 4
    except ValueError:  # a name, which may resolve to IPv4
        return True


def _check_s3(config: Config) -> None:
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


def _check_s3_keys(config: Config) -> None:
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
    return bool(colon and host) and port.isascii() and port.isdigit() and int(port) <= 65535


def _is_host(host: str) -> bool:
    """A DNS name (ASCII labels of letters, digits, hyphens and underscores) or an IP
    address, an IPv6 one in brackets or not."""
    try:
        ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
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


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Adds one flag per setting; unset flags stay None so the environment can apply."""
    for f in dataclasses.fields(Config):
        kind = _field_type(f)
        extra: dict[str, Any] = {"choices": f.metadata["choices"] or None}
        if kind is bool:
            extra = {"action": argparse.BooleanOptionalAction}
        else:
            extra["type"] = kind
        parser.add_argument(
            flag_name(f.name), dest=f.name, default=None, help=_flag_help(f), **extra
        )


def load(args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Builds the config from flags (when given), then the environment, then defaults."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        flag_value = getattr(args, f.name, None) if args is not None else None
        if flag_value is not None:
            values[f.name] = flag_value
        elif env_name(f.name) in env:
            values[f.name] = _parse(f, env[env_name(f.name)])
    return Config(**values)


def table_markdown() -> str:
    """The configuration table, as docs/configuration.md shows it."""
    rows = ["| Environment variable | Flag | Default | Meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(Config):
        default = f.default if f.default != "" else "(empty)"
        meaning = f.metadata["help"]
        if f.metadata["choices"]:
            meaning += f" (one of: {', '.join(f.metadata['choices'])})"
        rows.append(f"| `{env_name(f.name)}` | `{flag_name(f.name)}` | `{default}` | {meaning} |")
    return "\n".join(rows) + "\n"


def _field_type(f: dataclasses.Field[Any]) -> type:
    return {"str": str, "int": int, "bool": bool, "float": float}[str(f.type)]


def _flag_help(f: dataclasses.Field[Any]) -> str:
    return f"{f.metadata['help']} [env {env_name(f.name)}, default {f.default!r}]"


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = _field_type(f)
    try:
        if kind is bool:
            return _parse_bool(raw)
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{env_name(f.name)}={raw!r} is not a valid {kind.__name__}") from None


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(raw)
