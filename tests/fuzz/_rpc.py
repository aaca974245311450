"""Every RPC the server hosts, read from the protobuf service descriptors, and one way to
call any of them with raw bytes (identity serializers), whatever its streaming shape."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, MethodDescriptor
from google.rpc import error_details_pb2, status_pb2

from cairn_server import catalog

STATUS_DETAILS_KEY = "grpc-status-details-bin"
Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Rpc:
    method: MethodDescriptor

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def name(self) -> str:
        return f"{self.method.containing_service.name}.{self.method.name}"

    @property
    def request(self) -> Descriptor:
        return self.method.input_type

    @property
    def client_streaming(self) -> bool:
        return bool(self.method.client_streaming)

    @property
    def server_streaming(self) -> bool:
        return bool(self.method.server_streaming)


def all_rpcs() -> list[Rpc]:
    """Every method of every service a server hosts (`catalog.select([])`)."""
    pool = descriptor_pool.Default()
    return [
        Rpc(method)
        for spec in catalog.select([])
        for method in pool.FindServiceByName(spec.full_name).methods
    ]


def rpc_named(name: str) -> Rpc:
    """ "TrackingService.GetRun" -> its Rpc."""
    return next(r for r in all_rpcs() if r.name == name)


@dataclass(frozen=True)
class Outcome:
    """How a call ended: its status code, ErrorInfo reason and message, and the
    responses it got (the response messages' bytes)."""

    code: grpc.StatusCode
    reason: str = ""
    message: str = ""
    info: tuple[tuple[str, str], ...] = ()  # the ErrorInfo metadata
    responses: tuple[bytes, ...] = ()
    trailing: Metadata = ()
    initial: Metadata = ()


async def call(
    channel: grpc.aio.Channel,
    rpc: Rpc,
    payload: bytes | Sequence[bytes],
    metadata: Metadata = (),
    timeout: float = 30.0,
) -> Outcome:
    """Sends payload (one message's bytes, or a stream of them) as they are."""
    stream = [payload] if isinstance(payload, bytes) else list(payload)
    if rpc.client_streaming:
        factory = channel.stream_stream if rpc.server_streaming else channel.stream_unary
        argument: object = iter(stream)
    else:
        factory = channel.unary_stream if rpc.server_streaming else channel.unary_unary
        argument = stream[0] if stream else b""
    pending = factory(rpc.path)(argument, metadata=metadata, timeout=timeout)
    responses: list[bytes] = []
    try:
        if rpc.server_streaming:
            async for response in pending:
                responses.append(response)
        else:
            responses.append(await pending)
    except grpc.aio.AioRpcError as error:
        reason, message, info = _details(error)
        return Outcome(
            error.code(),
            reason,
            message,
            info,
            tuple(responses),
            _text(error.trailing_metadata()),
            _text(error.initial_metadata()),
        )
    return Outcome(
        grpc.StatusCode.OK,
        responses=tuple(responses),
        trailing=_text(await pending.trailing_metadata()),
        initial=_text(await pending.initial_metadata()),
    )


def _details(error: grpc.aio.AioRpcError) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """The ErrorInfo reason and metadata, and the status message, of a failed call."""
    message = error.details() or ""
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return info.reason, status.message or message, tuple(info.metadata.items())
    return "", message, ()


def _text(metadata: object) -> Metadata:
    return tuple((k, v) for k, v in (metadata or ()) if isinstance(v, str))  # type: ignore[attr-defined]


@dataclass
class Tally:
    """Status codes (and reasons) of every call the fuzz tier made in this run."""

    codes: collections.Counter[str] = field(default_factory=collections.Counter)
    reasons: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    seconds: float = 0.0
    failures: dict[tuple[str, str, str, str], tuple[int, str]] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        self.codes[outcome.code.name] += 1
        self.reasons[(outcome.code.name, outcome.reason)] += 1

    def fail(self, rpc: Rpc, outcome: Outcome, cause: str, shown: str) -> None:
        """Keeps the shortest input of each distinct failure (RPC, code, reason, cause)."""
        key = (rpc.name, outcome.code.name, outcome.reason, cause)
        if key not in self.failures or len(shown) < len(self.failures[key][1]):
            count = self.failures.get(key, (0, ""))[0]
            self.failures[key] = (count + 1, shown)
        else:
            count, kept = self.failures[key]
            self.failures[key] = (count + 1, kept)

    @property
    def total(self) -> int:
        return sum(self.codes.values())


TALLY = Tally()
