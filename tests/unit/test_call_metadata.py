"""A call's headers are read from gRPC once, whoever of the interceptor, the gate and
the servicer asks for them, and never taken for another call's; and the request id
they give the call's log lines is one a terminal shows as it is."""

import contextvars
import re

import pytest

from cairn_server.common.access import metadata_of
from cairn_server.common.errors import InvalidArgument
from cairn_server.common.idempotency import request_id_of
from cairn_server.common.interceptor import _request_id


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


@pytest.mark.parametrize(
    "sent",
    [
        "\x1b[2K\x1b[G\x1b]52;c;ZWNobw\x07\x1b[8m",  # erase the line, set the clipboard, hide
        "one\nforged line",
        "next\u2028line",
        "caf\u00e9",
        "x" * 129,  # a line of every log line it names, however long
        "",
    ],
)
def test_a_request_id_a_terminal_would_not_show_as_sent_is_replaced(sent: str) -> None:
    """A raw HTTP/2 peer, before any key is checked, can send header values gRPC's own
    clients cannot; console logs wrote them raw."""
    logged = contextvars.copy_context().run(_request_id, _Call((("x-request-id", sent),)))
    assert re.fullmatch("[0-9a-f]{32}", logged)


@pytest.mark.parametrize("sent", ["trace 7f3a-01:client/retry=2", "x" * 128])
def test_a_printable_request_id_is_kept(sent: str) -> None:
    logged = contextvars.copy_context().run(_request_id, _Call((("x-request-id", sent),)))
    assert logged == sent


@pytest.mark.parametrize("sent", ["one\nforged", "caf\u00e9", "x" * 129, ""])
def test_an_exactly_once_request_id_that_is_not_printable_ascii_is_refused(sent: str) -> None:
    """A raw HTTP/2 peer could send one with a line break, which spells another user's
    own key of an id (idempotency.RequestId.own_key)."""
    call = _Call((("x-cairn-request-id", sent),))
    with pytest.raises(InvalidArgument, match="printable ASCII"):
        contextvars.copy_context().run(request_id_of, call)
