"""Prometheus metrics of a server process: calls, latencies, streams, the pool.

Served on CAIRN_METRICS_ADDRESS (off when empty) at /metrics, apart from the gRPC port,
so a scrape never queues behind RPCs and needs no gRPC. The port is plain HTTP that anyone
reaching it may open, so what a connection can cost is bounded (docs/deploy.md, "Metrics").
"""

from __future__ import annotations

import collections
import dataclasses
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler
from wsgiref.types import ErrorStream, StartResponse, WSGIApplication, WSGIEnvironment

import asyncpg
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer, choose_encoder, gzip_accepted
from prometheus_client.registry import Collector

from . import logs
from .peers import counted_address

_log = logs.get("cairn.metrics")

CALLS = Counter("cairn_rpc_calls", "RPCs finished, by method and status code", ["method", "code"])
LATENCY = Histogram(
    "cairn_rpc_duration_seconds",
    "Time from the start to the end of an RPC, by method",
    ["method"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
STREAMS = Gauge("cairn_rpc_active_streams", "Streaming RPCs in progress, by method", ["method"])
AUTH_FAILURES = Counter(
    "cairn_auth_failures", "Failed authentications (a key was presented), by reason", ["reason"]
)
AUTH_REFUSALS = Counter(
    "cairn_auth_refusals", "Calls refused because their address failed too often"
)


# The method label of calls naming a method the server does not serve.
UNKNOWN_METHOD = "unknown"


def observe(method: str, code: str, seconds: float) -> None:
    calls, latency = _children.get((method, code)) or _children_of(method, code)
    calls.inc()
    latency.observe(seconds)


# The series of each (method, code) seen, so that a call does not look its labels up
# (a lock and two dictionaries: 4.9 µs a call against 1.8 µs).
_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}


def _children_of(method: str, code: str) -> tuple[Counter, Histogram]:
    children = _children[(method, code)] = (CALLS.labels(method, code), LATENCY.labels(method))
    return children


class _PoolCollector(Collector):
    """The gauges of the pool watched; registered once, since a registry refuses a
    second collector of the same names (a process serving metrics again, in tests)."""

    def __init__(self) -> None:
        self._pool: asyncpg.Pool | None = None

    def watch(self, pool: asyncpg.Pool) -> None:
        # The pool first: registering reads the names collect() yields, and a name[]
        # filter finds only those (none, read with no pool: the gauges were never given).
        first = self._pool is None
        self._pool = pool
        if first:
            REGISTRY.register(self)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self._pool is None:
            return
        yield GaugeMetricFamily(
            "cairn_db_pool_size", "Open database connections", self._pool.get_size()
        )
        yield GaugeMetricFamily(
            "cairn_db_pool_idle", "Open database connections not in use", self._pool.get_idle_size()
        )
        yield GaugeMetricFamily(
            "cairn_db_pool_max", "Most connections the pool opens", self._pool.get_max_size()
        )


_pool_collector = _PoolCollector()


def serve(address: str, pool: asyncpg.Pool) -> int:
    """Starts the /metrics endpoint (a daemon thread) and the pool gauges; returns the
    port bound, which port 0 picks free.

    Raises:
        OSError: the address cannot be bound, naming it and CAIRN_METRICS_ADDRESS.
    """
    port = _listen(address)
    _pool_collector.watch(pool)
    return port


def _listen(address: str) -> int:
    host, _, port = address.rpartition(":")
    # "[::1]:9090", as grpc takes it: the brackets only set the host apart from the port.
    host = host.removeprefix("[").removesuffix("]")
    try:
        server = _MetricsServer(host or "0.0.0.0", int(port))
    except OSError as error:  # "Name or service not known", an address in use
        raise OSError(
            f"cannot serve metrics on {address} (CAIRN_METRICS_ADDRESS, --metrics-address): "
            f"{error.strerror or error}"
        ) from error
    threading.Thread(target=server.serve_forever, name="cairn-metrics", daemon=True).start()
    return int(server.server_port)


# What one connection may cost. prometheus_client's own server (start_http_server) gives
# each connection a thread with no timeout and no cap: 100 idle connections held 100
# threads for good, and partial requests grew a process to 603 threads. Here each read
# and write of a connection waits TIMEOUT_SECONDS at most (Prometheus's default
# scrape_timeout is 10 s too; a scrape takes milliseconds), and MAX_CONNECTIONS are
# served at once (scrapers are one or two), each holding a thread and what wsgiref reads
# of a request (its line and at most 100 headers of 64 KiB), MAX_CONNECTIONS_PER_CLIENT
# of them of one client (an address, an IPv6 /64): no one client takes every slot from
# the scraper.
TIMEOUT_SECONDS = 10.0
MAX_CONNECTIONS = 8
MAX_CONNECTIONS_PER_CLIENT = 2


_Request = socket.socket | tuple[bytes, socket.socket]  # socketserver's, of TCP and UDP


class _MetricsServer(ThreadingWSGIServer):
    """prometheus_client's server and WSGI app (the same /metrics, content types, gzip and
    methods), with each connection on a timeout, at most MAX_CONNECTIONS at once and
    MAX_CONNECTIONS_PER_CLIENT of one client."""

    def __init__(self, host: str, port: int) -> None:
        # What start_http_server does: the family of the host, so an IPv6 host binds.
        family, _, _, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        self.address_family = family
        self._held: collections.Counter[str] = collections.Counter()  # by client
        self._holding = threading.Lock()
        super().__init__((str(sockaddr[0]), port), _Handler)
        self.set_app(_Paced(make_wsgi_app(REGISTRY)))

    def process_request(self, request: _Request, client_address: Any) -> None:
        # Past a bound a connection is closed at once rather than left to wait: waiting
        # would stop the accept loop, so every later connection (the scraper's too) would
        # queue behind the ones holding the slots; closed, it costs nothing, and a
        # scraper sees a prompt failure and tries again next interval.
        client = counted_address(str(client_address[0]))
        if not self._take(client):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)  # starts its thread
        except BaseException:
            self._give_back(client)
            raise

    def process_request_thread(self, request: _Request, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._give_back(counted_address(str(client_address[0])))

    def _take(self, client: str) -> bool:
        with self._holding:
            if self._held.total() >= MAX_CONNECTIONS:
                return False
            if self._held[client] >= MAX_CONNECTIONS_PER_CLIENT:
                return False
            self._held[client] += 1
            return True

    def _give_back(self, client: str) -> None:
        with self._holding:
            self._held[client] -= 1
            if not self._held[client]:
                del self._held[client]

    def handle_error(self, request: _Request, client_address: Any) -> None:
        # A connection timed out or reset by its client is routine on an open port:
        # dropped without a traceback on stderr.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


# The share of the process's time answers may take. An answer is rendered in Python,
# holding the interpreter's lock the gRPC loop needs: a client scraping in a loop (within
# its connections) cut the process's calls from 811 a second to 100, four such clients
# to 11. Rendered one at a time, each after a rest nine times as long as the last took
# (1 s at most, for a page so large that its scrape would wait too long), answers take a
# tenth of it however often they are asked for (of pages rendered in under 0.11 s; a
# 250 KB page renders in 13 ms). During a rest, a request asking what one rendered
# within KEPT_SECONDS asked gets that answer at once: each one queued behind a scraping
# loop paid a render and a rest (a scrape waited 3-7 s behind six connections). Answers
# of MAX_KEPT kinds are kept, so clients asking in turn for several share them too.
RENDER_SHARE = 0.1
MAX_REST_SECONDS = 1.0
KEPT_SECONDS = 1.0
MAX_KEPT = 8


@dataclasses.dataclass(frozen=True)
class _Answer:
    status: str
    headers: tuple[tuple[str, str], ...]  # a copy to each answer: wsgiref adds to them
    body: bytes
    rendered_at: float  # time.monotonic()


class _Paced:
    """A WSGI app whose answers are rendered one at a time, at most RENDER_SHARE of the
    time, each kept for its rest; each is written to its connection after, without
    holding up the others."""

    def __init__(self, app: WSGIApplication) -> None:
        self._app = app
        self._rendering = threading.Lock()
        self._next_at = 0.0  # time.monotonic() the next render may start at
        self._kept: dict[tuple[object, ...], _Answer] = {}

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        kind = _kind(environ)
        with self._rendering:
            answer, now = self._kept.get(kind), time.monotonic()
            # Rendered anew once the rest is over: an answer kept is only for the rest.
            if answer is None or now >= self._next_at or now - answer.rendered_at > KEPT_SECONDS:
                time.sleep(max(0.0, self._next_at - now))
                answer = self._render(environ)
                if len(self._kept) >= MAX_KEPT:
                    self._kept.clear()
                self._kept[kind] = answer
        start_response(answer.status, list(answer.headers))
        return [answer.body]

    def _render(self, environ: WSGIEnvironment) -> _Answer:
        said: list[Any] = []

        def keep(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            said[:] = [status, headers]
            return None

        started = time.monotonic()
        try:
            body = b"".join(self._app(environ, keep))
        except Exception as error:  # a request the app cannot answer (a bad Accept)
            _log.warning("metrics answer failed", error=repr(error))
            said[:] = ["500 Internal Server Error", [("Content-Type", "text/plain")]]
            body = b"the metrics could not be rendered\n"
        finally:  # a render that failed rests too
            ended = time.monotonic()
            rest = (ended - started) * (1 / RENDER_SHARE - 1)
            self._next_at = ended + min(rest, MAX_REST_SECONDS)
        return _Answer(said[0], tuple(said[1]), body, ended)


def _kind(environ: WSGIEnvironment) -> tuple[object, ...]:
    """What prometheus_client's app answers a request by: requests alike in it get the
    same answer however their headers are spelled (`gzip` or `gzip, deflate`)."""
    method = str(environ.get("REQUEST_METHOD", ""))
    if method != "GET" or environ.get("PATH_INFO") == "/favicon.ico":
        return (method, environ.get("PATH_INFO") == "/favicon.ico")
    accept = str(environ.get("HTTP_ACCEPT") or "")
    try:
        _, content_type = choose_encoder(accept)
    except Exception:  # the app fails on it too, answered alone
        content_type = f"unreadable: {accept}"
    names = parse_qs(str(environ.get("QUERY_STRING", ""))).get("name[]", [])
    gzipped = gzip_accepted(str(environ.get("HTTP_ACCEPT_ENCODING") or ""))
    return (method, content_type, gzipped, tuple(sorted(set(names))))


class _Handler(WSGIRequestHandler):
    """wsgiref's handler (one request a connection), each read and write of it on a
    timeout; logs nothing, as prometheus_client's."""

    def setup(self) -> None:
        self.request.settimeout(TIMEOUT_SECONDS)  # for every read and write after
        super().setup()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def get_stderr(self) -> ErrorStream:
        return _ErrorsButDisconnects()


class _ErrorsButDisconnects:
    """Where wsgiref writes the traceback of an answer that failed: stderr, but for a
    connection's failure (a client that stopped reading, or left), which its handler
    logs while the exception is handled."""

    def write(self, text: str) -> None:
        if not isinstance(sys.exc_info()[1], OSError):
            sys.stderr.write(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        sys.stderr.flush()
