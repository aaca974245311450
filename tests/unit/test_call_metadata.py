"""A call's headers are read from gRPC once, whoever of the interceptor, the gate and
the servicer asks for them, and never taken for another call's."""

import contextvars

from cairn_server.common.access import metadata_of


class _Call:
    """Stands in for a grpc.aio.ServicerContext, counting reads of its headers."""

    def __init__(self, headers: tuple[tuple[str, str], ...] | None) -> None:
        self.headers = headers
        self.reads = 0

    def invocation_metadata(self) -> tuple[tuple[str, str], ...] | None:
        self.reads += 1
        return self.headers


def _within_a_call() -> None:
    call = _Call((("x-cairn-request-id", "a"), ("x-request-id", "b")))
    assert metadata_of(call) == (("x-cairn-request-id", "a"), ("x-request-id", "b"))
    assert metadata_of(call) == call.headers
    assert call.reads == 1
    other = _Call(None)
    assert metadata_of(other) == ()
    assert metadata_of(call) == call.headers
    assert (call.reads, other.reads) == (2, 1)


def test_a_call_s_headers_are_read_once_and_never_those_of_another_call() -> None:
    # Each RPC runs in a task of its own, so in a context of its own.
    contextvars.copy_context().run(_within_a_call)
