"""The settings of a Cairn server, each declared once: its type, default, meaning and bounds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


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
        span = f"at least {number(self.least)}"
        if self.most != math.inf:
            span = f"from {number(self.least)} to {number(self.most)}"
        if self.note:
            span += f" ({self.note})"
        return f"0 (off) or {span}" if self.zero_is_off else span


def number(value: float) -> str:
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
# Waits and timeouts: past an hour, one set by mistake (1e300) never ends.
_AN_HOUR = Bounds(0.001, 3600, "an hour")


@dataclass(frozen=True)
class Settings:
    """The settings of a Cairn server process as declared, each field one: what a
    `Config` (config.py) is made of, checked."""

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
        "most connections the pool opens; of those calls may use (all but one, the key "
        "cache's, with CAIRN_AUTH=api_key), metric-history streams take at most half, "
        "sorting searches of runs half, both together all but a quarter; the writes to one run "
        "or model a quarter, and the writes to all runs and models the rest",
        # asyncpg sets up every slot at start: 5,000,000 took 790 MB before serving, and
        # a PostgreSQL serves far fewer connections (max_connections is 100 by default).
        bounds=Bounds(1, 10_000, "the pool sets up each at start"),
    )
    db_acquire_timeout_seconds: float = _setting(
        5.0,
        "longest wait for a free pool connection; then the call is UNAVAILABLE "
        "(DATABASE_BUSY) instead of waiting out its deadline",
        bounds=_AN_HOUR,
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
        bounds=_AN_HOUR,
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
        "tracking does not start while a stored run would not fit one, nor the registry "
        "below 6526848 (about 6.2 MiB), which carries a model at its limits with its "
        "latest version of each stage",
        bounds=Bounds(1024 * 1024, INT32_MAX, "1 MiB to 2 GiB less a byte, gRPC's most"),
    )
    shutdown_grace_seconds: float = _setting(
        10.0,
        "on SIGTERM/SIGINT/SIGHUP, how long in-flight calls may take to finish; a second signal "
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
    max_connection_age_seconds: float = _setting(
        300.0,
        "how long a client's connection takes new calls before the server asks the client "
        "to open another (calls under way on it finish, however long): a client then "
        "resolves the server's name again and reaches the replicas added since it "
        "connected",
        # gRPC's resolver looks a name up again only when a connection ends, and without
        # an age none did: a client held for hours never met a pod the autoscaler added.
        bounds=Bounds(1, INT32_MAX // 1000, "24 days", zero_is_off=True),
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
        # A shorter interval makes an idle server a loop of probes; a longer one than an
        # hour, health that never follows the database.
        bounds=Bounds(0.1, 3600, "an hour"),
    )
    health_probe_timeout_seconds: float = _setting(
        2.0,
        "longest a health probe waits to connect, then for its answer; past it the "
        "database counts as unreachable (raise it for a database across a slow link)",
        bounds=_AN_HOUR,
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
        20,
        "failed authentications a client address may make per window before it is refused",
        bounds=Bounds(1),
    )
    auth_failure_window_seconds: float = _setting(
        60.0,
        "length of that window; a refused address may try again after it",
        bounds=Bounds(0.001, 86400, "a day"),
    )
