"""Hosting services on one grpc.aio server: health, reflection, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import cast

import asyncpg
import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from . import database, logs, metrics, migrations, reflection
from .access import Gate, Role
from .config import Config
from .health import LIVENESS, HealthServicer
from .idempotency import Idempotency
from .interceptor import CallInterceptor
from .page_seals import PageSeals
from .read_slots import ReadSlots
from .service import Resources, ServiceSpec
from .signals import Signalled, SignalWaiter, before_signal
from .stopping import STOP_MARGIN_SECONDS, Stopping
from .tls import server_credentials
from .watch import watch_database
from .write_slots import WriteSlots

_log = logs.get("cairn.server")
# grpc sets SO_REUSEPORT by default: a second server on a port in use would start and
# silently take part of its traffic. Without it, binding a port in use fails.
ONE_SERVER_PER_PORT = [("grpc.so_reuseport", 0)]
# Messages as sent, never compressed: a few MB of gzip made a server decode gigabytes
# (a compressed call is UNIMPLEMENTED, docs/deploy.md "Memory").
UNCOMPRESSED = [("grpc.compression_enabled_algorithms_bitset", 1)]
MAX_PRUNE_INTERVAL_SECONDS = 3600
# The most a call's headers may hold (gRPC's hard limit; the client's longest key, 8
# KiB, fits with room for the rest). Past it a call is RESOURCE_EXHAUSTED.
MAX_HEADER_BYTES = 16 * 1024


# The least time a client has to answer a ping. gRPC waits as long for the answers to
# the pings it sends to size its window while a client uploads, and a slow link's
# answer queues behind the bytes it is sending: at 10 s an upload over 512 kbit/s was
# cut at every try. A minute is gRPC's own default.
PING_ANSWER_SECONDS = 60.0


def _keepalive(seconds: float) -> list[tuple[str, int]]:
    """Pings for connections quiet that long, and closes those that do not answer
    within as long again, and at least PING_ANSWER_SECONDS.

    gRPC holds an answer until its client has read it all or gone: a paused client (a
    stopped process, a frozen pod, a vanished host) made each 5-byte search hold tens
    of MiB for as long as its connection stood, which without pings was for ever. Such
    a client answers no ping either; a live one does, however busy it is."""
    answer = int(max(seconds, PING_ANSWER_SECONDS) * 1000)
    return [
        ("grpc.keepalive_time_ms", int(seconds * 1000)),
        # Older cores wait this long for a ping's answer, newer ones (1.85 measured)
        # the next: both, or a frozen client is never closed.
        ("grpc.keepalive_timeout_ms", answer),
        ("grpc.http2.ping_timeout_ms", answer),
        # Quiet connections too: their answers may all have been handed to the
        # transport, so gRPC counts no call on them.
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def _connection_age(seconds: float) -> list[tuple[str, int]]:
    """Past seconds (gRPC adds up to a tenth either way, so that connections opened
    together do not all end together), a connection is sent GOAWAY: its client opens
    another for new calls, looking the name up again, while the calls under way finish
    without a grace period's cut, an upload of hours included. 0: never."""
    return [("grpc.max_connection_age_ms", int(seconds * 1000))] if seconds else []


class CairnServer:
    """One gRPC server hosting one or more Cairn services on one port."""

    def __init__(self, config: Config, services: Sequence[ServiceSpec], pool: asyncpg.Pool):
        self.config = config
        self.services = list(services)
        usable = database.usable_connections(config)
        self._write_slots = WriteSlots.for_pool(usable)
        self._idempotency = Idempotency(
            pool,
            {spec.full_name: spec.schema for spec in self.services if spec.records_requests},
            exempt=set().union(*(spec.not_recorded for spec in self.services)),
            turn=self._turn,
        )
        self._stopping = Stopping()
        self._seals = PageSeals()
        resources = Resources(
            config=config,
            pool=pool,
            idempotency=self._idempotency,
            write_slots=self._write_slots,
            read_slots=ReadSlots(usable, config.db_acquire_timeout_seconds),
            stopping=self._stopping,
        )
        self._resources = resources
        self._background: list[asyncio.Task[None]] = []
        limit = config.max_message_bytes
        self._gate = _gate(self.services, resources)
        self._gate_closed = False
        self._server = grpc.aio.server(
            interceptors=[
                CallInterceptor(
                    self._gate, role_table(services), self._seals, self._idempotency, self._stopping
                )
            ],
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                *UNCOMPRESSED,
                # One limit for a call's headers, not gRPC's two: past its soft one (8
                # KiB) it refuses calls at random, the more the nearer they are to 16 KiB.
                ("grpc.max_metadata_size", MAX_HEADER_BYTES),
                ("grpc.absolute_max_metadata_size", MAX_HEADER_BYTES),
                *_keepalive(config.keepalive_seconds),
                *_connection_age(config.max_connection_age_seconds),
                *ONE_SERVER_PER_PORT,
            ],
        )
        self._health = HealthServicer()
        # A second, plaintext server with nothing but health, for probes that cannot
        # speak TLS; it shares the health states of the main one.
        self._probe_server: grpc.aio.Server | None = None
        self.health_port: int | None = None  # bound by start()
        if config.health_address:
            self._probe_server = grpc.aio.server(options=[*UNCOMPRESSED, *ONE_SERVER_PER_PORT])
            health_pb2_grpc.add_HealthServicer_to_server(
                self._health, generic_handlers_only(self._probe_server)
            )
        hosting = _GenericHandlersOnly(self._server)
        target = cast(grpc.aio.Server, hosting)
        for spec in self.services:
            spec.register(target, resources)
            for write, reread in spec.rereads.items():
                get = hosting.methods[f"/{spec.full_name}/{reread.get}"].unary_unary
                self._idempotency.reread(f"/{spec.full_name}/{write}", reread, get)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, target)
        reflection.enable(target, self.reflected_names())

    def _turn(self, method: str, request: Message) -> contextlib.AbstractAsyncContextManager[None]:
        """The turn a write call the interceptor records takes, with a request id or
        without (write_slots.py): one of its target's slots, as its service's
        written_to names the target."""
        service = method.lstrip("/").partition("/")[0]
        spec = next((spec for spec in self.services if spec.full_name == service), None)
        target = spec.written_to(request) if spec and spec.written_to else None
        return self._write_slots.turn(target)

    def reflected_names(self) -> list[str]:
        return [
            *(spec.full_name for spec in self.services),
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        ]

    async def start(self, address: str | None = None) -> int:
        """Binds (port 0 picks a free one), starts serving; returns the bound port.

        With a certificate configured the port speaks TLS only (and mTLS with a client CA).
        """
        address = address or self.config.listen_address
        await self._seals.load(self._resources.pool, self.services)
        port = _bind(self._server, address, server_credentials(self.config))
        if self._probe_server is not None:
            self.health_port = _bind(
                self._probe_server, self.config.health_address, None, "CAIRN_HEALTH_ADDRESS"
            )
            await self._probe_server.start()
        await self._server.start()
        await self._set_health(True)
        await self._health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        self._background = [
            asyncio.create_task(spec.background(self._resources), name=f"{spec.name} background")
            for spec in self.services
            if spec.background is not None
        ]
        self._background += [
            asyncio.create_task(self._watch_database()),
            asyncio.create_task(self._forget_request_ids()),
        ]
        return port

    async def _watch_database(self) -> None:
        config = self.config
        await watch_database(
            self._resources.pool,
            self._set_health,
            config.health_probe_interval_seconds,
            config.health_probe_timeout_seconds,
        )

    async def _end_background(self, grace: float) -> None:
        """Waits for the cancelled background work, within the grace period. Work
        cancelled in the middle of a statement waits for PostgreSQL to confirm the
        cancel, which a database behind a partition never does: such work is left
        behind (and the process ends without it) rather than waited for for ever."""
        if not self._background:
            return
        _, stuck = await asyncio.wait(self._background, timeout=grace + STOP_MARGIN_SECONDS)
        if stuck:
            _log.warning("background work left behind", tasks=[t.get_name() for t in stuck])

    async def _forget_request_ids(self) -> None:
        """Prunes the request ids of writes older than their retention, four times per
        retention (at most hourly), so none is kept much past it."""
        retention = self.config.request_id_retention_seconds
        while True:
            try:
                await self._idempotency.prune(retention)
            except Exception:
                _log.exception("pruning request ids failed")
            await asyncio.sleep(min(MAX_PRUNE_INTERVAL_SECONDS, retention / 4))

    async def _set_health(self, serving: bool) -> None:
        """Every service's health, and the server's ("") at once; ignored by the health
        servicer once shutdown began."""
        status = health_pb2.HealthCheckResponse
        for name in ["", *(spec.full_name for spec in self.services)]:
            await self._health.set(name, status.SERVING if serving else status.NOT_SERVING)

    async def stop(self, grace: float | None = None) -> None:
        """Reports NOT_SERVING and takes no more calls, then lets in-flight calls finish
        within the grace period, which the services' background work (the artifacts
        service's completions) ends within too."""
        await self._health.enter_graceful_shutdown()
        grace = self.config.shutdown_grace_seconds if grace is None else grace
        # The earliest a stop asked for: a second one with more grace cuts no later.
        ends = asyncio.get_running_loop().time() + grace
        self._stopping.grace_ends = min(self._stopping.grace_ends, ends)
        self._stopping.set()
        for task in self._background:
            task.cancel()
        await asyncio.gather(
            self._server.stop(grace),
            self._end_background(grace),
            self._stopping.held_ended(grace),
        )
        await self._close_gate()
        if self._probe_server is not None:
            await self._probe_server.stop(0)

    async def stop_now(self) -> None:
        """Cuts the calls still running, as the end of the grace period does (their
        clients are told UNAVAILABLE, the log says SHUTTING_DOWN), and stops serving:
        for an operator who does not want to wait for them (stop() must have begun).
        It ends what the stop it cuts short had yet to, so the pool can close at once."""
        self._stopping.grace_ends = asyncio.get_running_loop().time()
        await self._server.stop(0)
        await asyncio.gather(self._close_gate(), self._end_background(0))
        if self._probe_server is not None:
            await self._probe_server.stop(0)

    async def _close_gate(self) -> None:
        """Drops the key cache's listening connection and gives its slot back to the
        pool, whose close would otherwise wait POOL_CLOSE_SECONDS for it; once, though stop() and
        stop_now() both ask. Shielded: a second signal cancels the stop() closing it."""
        if not self._gate_closed:
            self._gate_closed = True
            await asyncio.shield(self._gate.close())


class _GenericHandlersOnly:
    """A server as services register on it: it takes their handlers as generic
    handlers only, never as registered methods.

    For every call it takes, grpc.aio's server waits (asyncio.wait) on one pending
    request per registered method, adding and removing a callback on each: Python
    work in proportion to the methods hosted (43 for `serve tracking`, 80 for
    `serve all`; docs/tracking.md, "Performance", has what it costs). Generic
    handlers are one pending request for all methods, each call's handler found by
    a dictionary lookup in each service's table. The generated `add_*_to_server`
    functions add each service's handlers both ways, so leaving out the registered
    copy loses no method."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server
        # Full method name to its handler, as services registered it (the servicer's
        # own method, unwrapped): how a write's Reread finds the read it names.
        self.methods: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        """Left out of the server: the generic handler added beside them serves the
        same methods."""
        self.methods.update({f"/{service}/{name}": found for name, found in handlers.items()})


def generic_handlers_only(server: grpc.aio.Server) -> grpc.aio.Server:
    """server, as services register on it (see _GenericHandlersOnly)."""
    return cast(grpc.aio.Server, _GenericHandlersOnly(server))


def _bind(
    server: grpc.aio.Server,
    address: str,
    credentials: grpc.ServerCredentials | None,
    setting: str = "CAIRN_LISTEN_ADDRESS",
) -> int:
    """Binds address, the value of setting (port 0 picks a free one); returns the port
    bound."""
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:  # how grpc says it could not bind
        port = 0
    if port == 0:
        raise OSError(
            f"cannot listen on {address} ({setting}): the address is in use or not available"
        )
    return port


def role_table(services: Sequence[ServiceSpec]) -> dict[str, Role]:
    """Full method name to role, for every RPC of the services; fails on a gap, so no
    RPC can be served without a declared role."""
    table = {}
    for spec in services:
        methods = descriptor_pool.Default().FindServiceByName(spec.full_name).methods
        names = {m.name for m in methods}
        if names != set(spec.roles):
            raise ValueError(
                f"{spec.full_name}: role table differs from the RPCs by "
                f"{sorted(names ^ set(spec.roles))}"
            )
        table.update({f"/{spec.full_name}/{name}": role for name, role in spec.roles.items()})
    return table


def _gate(services: Sequence[ServiceSpec], resources: Resources) -> Gate:
    gates = [spec.gate for spec in services if spec.gate is not None]
    if len(gates) != 1:
        raise ValueError("exactly one hosted service (auth) must provide the gate")
    return gates[0](resources)


async def migrate(
    pool: asyncpg.Pool, services: Sequence[ServiceSpec], config: Config | None = None
) -> None:
    """Applies every service's pending migrations, under one hold of their lock; given
    up when the database stops answering, with the health probes' interval and timeout
    of config (their defaults without one)."""
    probes = config or Config()
    timeout = probes.health_probe_timeout_seconds
    async with (
        pool.acquire() as conn,
        migrations.watched(
            conn,
            lambda: database.connect_beside(pool, timeout),
            probes.health_probe_interval_seconds,
            timeout,
        ),
        migrations.held(conn),
    ):
        for spec in services:
            await migrations.apply(conn, spec.schema, migrations.discover(spec.migrations_dir))


async def run(config: Config, services: Sequence[ServiceSpec]) -> None:
    """Serves until SIGTERM, SIGINT or SIGHUP (signals.py), then shuts down gracefully.
    A signal before it serves (while it waits for the migrations another process is
    applying, say) ends its startup, as gracefully."""
    with SignalWaiter.installed() as signals:
        try:
            # Run to its end whatever comes (a thread is not cancelled): a signal while
            # an embedded PostgreSQL starts is acted on once it is up, so that "stopped"
            # is still the last word.
            url = await asyncio.to_thread(database.resolve_url, config)
            pool = await before_signal(signals, database.create_pool(url, config))
            try:
                await before_signal(signals, _prepare(pool, config, services))
                await _serve(config, services, pool, signals)
            finally:
                await database.close_pool(pool)
        except Signalled:
            pass
    _log.info("stopped")


async def _prepare(pool: asyncpg.Pool, config: Config, services: Sequence[ServiceSpec]) -> None:
    """Readies the database for the services: their migrations applied (or waited
    for) and checked."""
    if config.migrate_on_start:
        await migrate(pool, services, config)
    await migrations.check(pool, services)
    for spec in services:
        if spec.servable:
            await spec.servable(pool, config)


async def _serve(
    config: Config, services: Sequence[ServiceSpec], pool: asyncpg.Pool, signals: SignalWaiter
) -> None:
    metrics_port: int | None = None
    if config.metrics_address:
        metrics_port = metrics.serve(config.metrics_address, pool)
    server = CairnServer(config, services, pool)
    port = await server.start()
    _log.info(
        "serving",
        address=config.listen_address,
        port=port,
        metrics_port=metrics_port,
        health_port=server.health_port,
        services=[spec.full_name for spec in services],
    )
    received = await signals.wait()
    _log.info("shutting down", signal=received, grace_seconds=config.shutdown_grace_seconds)
    await _stop(server, signals)


async def _stop(server: CairnServer, signals: SignalWaiter) -> None:
    """Stops the server within its grace period, or at once on another signal: an
    operator who signals again does not want to wait for the calls still running."""
    stopping = asyncio.ensure_future(server.stop())
    again = asyncio.ensure_future(signals.wait())
    await asyncio.wait({stopping, again}, return_when=asyncio.FIRST_COMPLETED)
    if stopping.done():
        again.cancel()
        stopping.result()
        return
    _log.warning("stopping at once", signal=again.result())
    stopping.cancel()
    # Before the pool closes: a call still running would otherwise wait for its
    # connection, then fail as if the database were away (DATABASE_UNAVAILABLE). Not
    # awaited without a bound: work cancelled in the middle of a statement waits for
    # PostgreSQL to confirm the cancel.
    await asyncio.wait(
        {stopping, asyncio.ensure_future(server.stop_now())}, timeout=STOP_MARGIN_SECONDS
    )
