"""A client's gRPC channels: how they are made, opened and closed.

The channel options and the retry table (`ATTEMPTS`, `RETRY_BACKOFF_SECONDS`,
`resent_after`: gRPC's policy for the server streams, `Transport.unary`'s resends for the
rest, kept in one place so the two cannot drift apart), TLS material, and the channel
stand-ins stubs are bound to: `LazyChannel`, opened in the event loop of the first call
and refused in a process forked with one open, and `RoutedChannel`, one channel per
service deployed apart. Apart from `_transport`, which makes calls on these channels
and never needs to know how they live.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from . import _small_files as small_files
from ._targets import is_target, parse, target
from .artifacts.v1 import artifacts_service_pb2
from .auth.v1 import auth_service_pb2
from .exceptions import (
    AbortedError,
    CairnError,
    ClientClosedError,
    ForkedProcessError,
    UnavailableError,
)
from .exceptions import CancelledError as ServerCancelledError
from .registry.v1 import registry_service_pb2
from .tracking.v1 import tracking_service_pb2

# Answers are taken up to gRPC's most, so the server's CAIRN_MAX_MESSAGE_BYTES is their
# bound: at 64 MiB, those of a server given more (a run may hold a quarter of its
# setting) failed here with RESOURCE_EXHAUSTED. Requests keep the client's own bound,
# past any a call needs, so a mistaken one is refused before it is sent.
MAX_RECEIVE_BYTES = 2**31 - 1
MAX_SEND_BYTES = 64 * 1024 * 1024


# The services a client reaches, by the short names `cairn.Client(service_addresses=...)`
# takes.
SERVICES = {
    name: module.DESCRIPTOR.services_by_name[service].full_name
    for name, module, service in (
        ("tracking", tracking_service_pb2, "TrackingService"),
        ("registry", registry_service_pb2, "RegistryService"),
        ("artifacts", artifacts_service_pb2, "ArtifactService"),
        ("auth", auth_service_pb2, "AuthService"),
    )
}


# A call is sent at most this often in all, within its deadline, the waits between
# doubling from the first to the longest (jittered). CANCELLED is retried too: a call the
# client cancels raises asyncio.CancelledError, so this status comes from the server
# side, which answers it to calls that arrive while it shuts down, before any handler ran.
ATTEMPTS = 4
RETRY_BACKOFF_SECONDS = (0.1, 2.0)
RESENT_AFTER = (UnavailableError, ServerCancelledError)


def resent_after(error: CairnError) -> bool:
    """Whether a call that failed so is sent again: UNAVAILABLE or CANCELLED
    (RESENT_AFTER), or ABORTED TRANSACTION_CONFLICT, the victim of a deadlock or a
    serialization conflict, which applied nothing of the call."""
    if isinstance(error, AbortedError):
        return error.reason == "TRANSACTION_CONFLICT"
    return isinstance(error, RESENT_AFTER)


# round_robin spreads calls over every address a name resolves to, e.g. the pods behind a
# headless Kubernetes Service ("dns:///cairn-tracking-headless.cairn.svc:50051").
_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
CHANNEL_OPTIONS = [
    ("grpc.service_config", _SERVICE_CONFIG),
    # gRPC's own retry of a call that never left the client. It has no policy to send
    # calls again: Transport does, the same way for every call (gRPC's would stop at an
    # answer's headers).
    ("grpc.enable_retries", 1),
    ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
    ("grpc.max_send_message_length", MAX_SEND_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    # Each client connects on its own: gRPC otherwise shares one connection per address
    # across a process's channels, so a client made after its server came back failed
    # while another client's attempts to connect were still backing off.
    ("grpc.use_local_subchannel_pool", 1),
    # A client that lived through an outage tries to connect at most about 2 s apart, not
    # up to 120 s, so it reaches its server within seconds of its return.
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


# The grpc.aio channels clients opened that are still alive: grpc's aio state (its
# polling thread) lives while one does, and a fork copies it into the child unusable.
_live_channels: weakref.WeakSet[grpc.aio.Channel] = weakref.WeakSet()
# Whether this process was forked while one was: its clients' calls hung, or crashed
# it (SIGSEGV, SIGABRT in grpc's epoll poller); they are refused instead.
_forked_with_live_channels = False


def _note_fork() -> None:
    global _forked_with_live_channels
    _forked_with_live_channels = _forked_with_live_channels or bool(_live_channels)


# The names (Linux's /proc comm, cut to 15 characters) of the threads gRPC's core runs
# while a channel lives. They end a few milliseconds after the last channel is freed;
# a fork before they have ended left children whose clients hung.
_GRPC_THREADS = ("event_engine", "grpc_global_tim", "lifeguard", "default-executo")
GRPC_THREADS_END_SECONDS = 1.0


def _grpc_threads() -> int:
    """How many of gRPC's core threads this process runs (0 where /proc is not)."""
    count = 0
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/comm") as comm:
                count += comm.read().strip().startswith(_GRPC_THREADS)
    return count


# When a client last closed its channels (time.monotonic()), if ever.
_closed_at: float | None = None


def _note_closed() -> None:
    global _closed_at
    _closed_at = time.monotonic()


def _let_grpc_threads_end() -> None:
    """Before a fork less than GRPC_THREADS_END_SECONDS after a client closed the last
    channel: waits out the rest of that time for gRPC's threads to end, so that a child
    forked just after its parent closed its clients can use gRPC. Not at close, which
    would wait for nothing most of the time; not at other forks, whose gRPC threads
    (another library's) are not this client's to wait for."""
    if _live_channels or _closed_at is None:
        return  # with a channel open the child is refused clients (ForkedProcessError)
    deadline = _closed_at + GRPC_THREADS_END_SECONDS
    while time.monotonic() < deadline and _grpc_threads():
        time.sleep(0.002)


os.register_at_fork(before=_let_grpc_threads_end, after_in_child=_note_fork)


def _refuse_if_forked_with_live_channels() -> None:
    if _forked_with_live_channels:
        raise ForkedProcessError(
            "this process was forked while its parent had a cairn client's gRPC "
            "connection open, and gRPC cannot work in it: start child processes with the "
            "'spawn' or 'forkserver' method (multiprocessing.get_context('spawn'), "
            "DataLoader(multiprocessing_context='spawn')), or fork before making any "
            "client, or after closing them all"
        )


class LazyChannel:
    """A channel opened on the first call, in the event loop that makes that call.

    A grpc.aio channel belongs to the loop it was made in. Kubeflow's users make their
    client at module level and use it inside `asyncio.run(...)`, whose loop does not
    exist yet when the client is made; so the stubs are bound to this stand-in, and the
    real channel is made when a call first needs it. Each loop that calls gets a channel
    of its own, kept while that loop lives (two loops taking turns do not open one per
    turn); a call while another loop using the client runs is refused. `close()` closes
    every channel, and the client for good: later calls raise ClientClosedError.
    """

    # What callers ask of a channel besides its multi-callables.
    _FORWARDED = frozenset({"get_state", "channel_ready", "wait_for_state_change"})

    def __init__(self, open_channel: Callable[[], grpc.aio.Channel]) -> None:
        _refuse_if_forked_with_live_channels()  # as the client is made, not at its call
        self._open = open_channel
        self._channels: dict[asyncio.AbstractEventLoop, grpc.aio.Channel] = {}
        self._closed = False
        # Threads each running a loop may make the first call at once.
        self._lock = threading.Lock()
        # The stubs' multi-callables, each holding the channel it was last called on:
        # closing has them let it go, or grpc's aio state (its polling thread) would
        # outlive the client, and a child forked after the close could not use gRPC.
        self._deferred: weakref.WeakSet[_Deferred] = weakref.WeakSet()

    def get(self) -> grpc.aio.Channel:
        """The channel of the running loop, opened now if need be.

        Raises:
            ClientClosedError: when the client was closed.
            RuntimeError: when another loop using this client is running.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed:
                raise ClientClosedError("this cairn client is closed; make a new one")
            channel = self._channels.get(loop)
            if channel is not None:
                return channel
            if any(other.is_running() for other in self._channels):
                raise RuntimeError(
                    "this cairn client is in use by another running event loop; "
                    "make one client per loop (or use cairn.sync from threads)"
                )
            for ended in [other for other in self._channels if other.is_closed()]:
                _destroy(self._channels.pop(ended))
            _refuse_if_forked_with_live_channels()
            channel = self._channels[loop] = self._open()
            _live_channels.add(channel)
            return channel

    @property
    def opened(self) -> bool:
        return bool(self._channels)

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Closes every channel, and the client: later calls raise ClientClosedError.
        Closing again does nothing."""
        with self._lock:
            self._closed = True
            channels, self._channels = self._channels, {}
        for deferred in list(self._deferred):
            deferred.forget()
        here = asyncio.get_running_loop()
        for loop, channel in channels.items():
            if loop is here:
                await channel.close()
            elif loop.is_running():  # another thread's loop: its channel closes there
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(channel.close(), loop))
            else:
                _destroy(channel)
        channels.clear()  # freed now: the last one shuts gRPC's aio state down
        _note_closed()

    def unary_unary(self, *args: Any, **kwargs: Any) -> _Deferred:
        return self._deferring("unary_unary", args, kwargs)

    def unary_stream(self, *args: Any, **kwargs: Any) -> _Deferred:
        return self._deferring("unary_stream", args, kwargs)

    def stream_unary(self, *args: Any, **kwargs: Any) -> _Deferred:
        return self._deferring("stream_unary", args, kwargs)

    def stream_stream(self, *args: Any, **kwargs: Any) -> _Deferred:
        return self._deferring("stream_stream", args, kwargs)

    def _deferring(self, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Deferred:
        deferred = _Deferred(self, kind, args, kwargs)
        self._deferred.add(deferred)
        return deferred

    def __getattr__(self, name: str) -> Any:
        # Only names of the real channel; any other would open a channel to answer
        # hasattr() or copy.copy()'s probes.
        if name not in LazyChannel._FORWARDED:
            raise AttributeError(name)
        return getattr(self.get(), name)


def _destroy(channel: grpc.aio.Channel) -> None:
    """Frees a channel whose loop does not run (ended, or between two runs), which
    cannot await its close: grpc's own finalizer destroys the core channel at once."""
    getattr(channel, "__del__")()  # noqa: B009 (grpc.aio.Channel's stub lacks it)


class _Deferred:
    """A stub's multi-callable whose channel is found when it is called."""

    def __init__(
        self, lazy: LazyChannel, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self._lazy = lazy
        self._kind = kind
        self._args = args
        self._kwargs = kwargs
        self._bound: Any = None
        self._bound_to: grpc.aio.Channel | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        channel = self._lazy.get()
        if self._bound_to is not channel:
            self._bound = getattr(channel, self._kind)(*self._args, **self._kwargs)
            self._bound_to = channel
        return self._bound(*args, **kwargs)

    def forget(self) -> None:
        """Lets go of the channel (closed with its client)."""
        self._bound = self._bound_to = None


class RoutedChannel:
    """Channels to services deployed apart (one Kubernetes Service each): a call goes
    to the channel of its service, as its method path names it, any other call to the
    default channel. Stubs bound to it never know; close() closes them all."""

    def __init__(self, default: LazyChannel, routes: Mapping[str, LazyChannel]) -> None:
        self._default = default
        self._routes = dict(routes)

    def _for(self, method: str) -> LazyChannel:
        service = method.lstrip("/").partition("/")[0]
        return self._routes.get(service, self._default)

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> _Deferred:
        return self._for(method).unary_unary(method, *args, **kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> _Deferred:
        return self._for(method).unary_stream(method, *args, **kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> _Deferred:
        return self._for(method).stream_unary(method, *args, **kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> _Deferred:
        return self._for(method).stream_stream(method, *args, **kwargs)

    @property
    def opened(self) -> bool:
        return any(c.opened for c in (self._default, *self._routes.values()))

    @property
    def closed(self) -> bool:
        return self._default.closed

    async def close(self) -> None:
        for channel in (self._default, *self._routes.values()):
            await channel.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._default, name)


Opener = Callable[[str], Callable[[], grpc.aio.Channel]]


def new_channel(
    opener: Opener,
    tls: bool,
    address: str,
    port: int | str | None,
    service_addresses: Mapping[str, str] | None,
) -> LazyChannel | RoutedChannel:
    """A channel to address (at port when it names none), or, given other addresses for
    some services (by the names of SERVICES, in the forms of cairn._targets), one that
    routes each call to its service's address; such an address naming no port takes
    the port given, else the one address names."""
    default = LazyChannel(opener(target(address, tls, port)))
    if not service_addresses:
        return default
    unknown = set(service_addresses) - set(SERVICES)
    if unknown:
        raise ValueError(
            f"service_addresses names {sorted(unknown)}; the services are {sorted(SERVICES)}"
        )
    shared = port or parse(address).port
    routes = {
        SERVICES[name]: LazyChannel(
            opener(target(other, tls, default=None if shared is None else int(shared)))
        )
        for name, other in service_addresses.items()
    }
    return RoutedChannel(default, routes)


def artifacts_host_of(address: str, service_addresses: Mapping[str, str] | None) -> str | None:
    address = (service_addresses or {}).get("artifacts", address)
    return None if is_target(address) else parse(address).host.strip("[]")


def tls_context(
    roots: bytes | None, client_cert: str | bytes | None, client_key: str | bytes | None
) -> ssl.SSLContext | None:
    """The channel's trust for plain TLS sockets; None when a client certificate or key
    is given as bytes or a pipe: the ssl module loads them from files only, and a pipe,
    read for gRPC already, has nothing left (transfers then go over gRPC)."""
    if not all(source is None or _is_file(source) for source in (client_cert, client_key)):
        return None
    context = ssl.create_default_context(cadata=roots.decode() if roots else None)
    if client_cert:
        context.load_cert_chain(client_cert, client_key)
    return context


def _is_file(source: str | bytes) -> bool:
    return isinstance(source, str) and os.path.isfile(source)


def read_pem(source: str | bytes | None) -> bytes | None:
    """A PEM file path (as Kubeflow's client takes custom_ca) or the PEM bytes themselves."""
    if source is None or isinstance(source, bytes):
        return source
    return small_files.read(source)
