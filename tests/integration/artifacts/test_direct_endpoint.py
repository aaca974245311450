"""The byte endpoint of direct transfer against what anyone on the network may send it,
and the client's side of an exchange that breaks: what a connection costs before its
ticket passes, how failures are answered, and when the client streams instead."""

import contextlib
import hashlib
import io
import json
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

import cairn
import cairn.sync
from cairn import _direct_io
from cairn._clients import _direct
from cairn.exceptions import UnavailableError
from cairn_server.artifacts import direct, filesystem, http_answers, pace
from cairn_server.artifacts.direct import ByteEndpoint
from cairn_server.artifacts.filesystem import _check_length, _preallocate
from cairn_server.artifacts.http_requests import ChunkedReader
from cairn_server.artifacts.streams import MERGE_BYTES
from cairn_server.artifacts.tickets import Ticket, TicketSigner
from cairn_server.common.config import Config
from cairn_server.common.errors import DataLoss
from tests.conftest import serving
from tests.integration.test_tls import pki  # noqa: F401 (a fixture)

DATA = b"0123456789" * 1000


class _Transfers:
    """The service's side, reduced to what these tests need: a file per key under a
    folder, uploads read to their end and not stored, and a failure to raise."""

    def __init__(self, root: Path) -> None:
        self.signer = TicketSigner()
        self.root = root
        self.failure: Exception | None = None
        self.reads: list[bytes] = []  # what each of the writer's reads returned

    def accept(self, ticket: Ticket) -> Any:
        if self.failure is not None:
            raise self.failure
        return object()

    def store(self, upload: Any, reader: ChunkedReader, ticket: Ticket) -> bytes:
        while data := reader.read(1 << 20):
            self.reads.append(data)
        assert reader.verified
        return b"stored"

    def local_file(self, key: str) -> Path:
        return self.root / key


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[tuple[ByteEndpoint, _Transfers]]:
    transfers = _Transfers(tmp_path)
    served = ByteEndpoint("127.0.0.1", 0, transfers, None)
    yield served, transfers
    served.close()


@pytest.fixture
def tls_endpoint(
    tmp_path: Path,
    pki: dict[str, Path],  # noqa: F811 (the fixture imported above)
) -> Iterator[ByteEndpoint]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["server_cert"], pki["server_key"])
    served = ByteEndpoint("127.0.0.1", 0, _Transfers(tmp_path), lambda: context)
    yield served
    served.close()


def _exchange(port: int, request: bytes) -> tuple[int, dict[str, Any]]:
    """Sends raw bytes; the answer's status and JSON body ({} when it is no JSON)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while received := connection.recv(65536):
            answer += received
    status = int(answer.split(b" ", 2)[1])
    if status == 100:
        answer = answer.split(b"\r\n\r\n", 1)[1]
        status = int(answer.split(b" ", 2)[1])
    body = answer.split(b"\r\n\r\n", 1)[1]
    with contextlib.suppress(ValueError):
        return status, json.loads(body)
    return status, {}


def _put(token: str, body: bytes, trailer: str = "") -> bytes:
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in (body[:5000], body[5000:]))
    return (
        (
            f"PUT /v1/transfers/{token} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
            "Expect: 100-continue\r\n\r\n"
        ).encode()
        + chunks
        + f"0\r\n{trailer}\r\n".encode()
    )


def _get(token: str) -> bytes:
    return f"GET /v1/transfers/{token} HTTP/1.1\r\n\r\n".encode()


def _idle(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]


def _taken_in(served: ByteEndpoint) -> None:
    """Waits until the endpoint took a connection in."""
    deadline = time.monotonic() + 10
    while not served.connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert served.connections, "the endpoint took no connection in within 10 s"


def _cut_while_trickling(connection: socket.socket, data: bytes) -> bool:
    """Sends data a byte every 0.2 s (its timeout), each well within a read's timeout
    of the endpoint; whether the endpoint cut the connection before the end."""
    for byte in data:
        try:
            connection.sendall(bytes([byte]))
            if connection.recv(1) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def test_idle_connections_take_no_transfer_slot(endpoint: tuple[ByteEndpoint, _Transfers]):
    served, transfers = endpoint
    (transfers.root / "k").write_bytes(DATA)
    token = transfers.signer.issue(method="GET", project="p", path="a", key="k", size=len(DATA))
    idle = _idle(served.port, direct.MAX_CONNECTIONS - 1)  # anyone's, sending nothing
    try:
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as connection:
            connection.sendall(_get(token))
            answer = connection.makefile("rb").read()
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(DATA)
    finally:
        for connection in idle:
            connection.close()


def test_connections_over_the_limit_are_closed_at_once(
    endpoint: tuple[ByteEndpoint, _Transfers],
):
    served, _ = endpoint
    idle = _idle(served.port, direct.MAX_CONNECTIONS)
    try:
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as over:
            assert over.recv(1) == b""  # no thread, no handshake: closed
    finally:
        for connection in idle:
            connection.close()


def test_a_connection_that_sends_no_request_is_closed(
    endpoint: tuple[ByteEndpoint, _Transfers], monkeypatch: pytest.MonkeyPatch
):
    served, _ = endpoint
    monkeypatch.setattr(direct, "HEAD_SECONDS", 0.2)
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as connection:
        assert connection.recv(1) == b""


def test_a_request_head_trickled_in_is_cut_off(
    endpoint: tuple[ByteEndpoint, _Transfers], monkeypatch: pytest.MonkeyPatch
):
    served, _ = endpoint
    monkeypatch.setattr(direct, "HEAD_SECONDS", 0.5)
    with socket.create_connection(("127.0.0.1", served.port), timeout=0.2) as connection:
        assert _cut_while_trickling(connection, b"G" * 50), "a head sent for 10 s was read"


def test_a_request_head_trickled_in_over_tls_is_cut_off(
    tls_endpoint: ByteEndpoint,
    monkeypatch: pytest.MonkeyPatch,
    pki: dict[str, Path],  # noqa: F811 (the fixture imported above)
):
    """TLS takes over the socket the endpoint watches; the head is still bounded."""
    monkeypatch.setattr(direct, "HEAD_SECONDS", 0.5)
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    with (
        socket.create_connection(("127.0.0.1", tls_endpoint.port), timeout=0.2) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as connection,
    ):
        assert _cut_while_trickling(connection, b"G" * 50), "a head sent for 10 s was read"


def test_a_connection_taken_in_before_the_endpoint_closed_is_cut_off(
    endpoint: tuple[ByteEndpoint, _Transfers], monkeypatch: pytest.MonkeyPatch
):
    served, _ = endpoint
    monkeypatch.setattr(direct, "HEAD_SECONDS", 1.5)  # due after close() ended
    with socket.create_connection(("127.0.0.1", served.port), timeout=0.2) as connection:
        _taken_in(served)
        served.close()
        assert _cut_while_trickling(connection, b"G" * 50), "a head sent for 10 s was read"


def test_failures_are_answered_as_the_grpc_service_answers_them(
    endpoint: tuple[ByteEndpoint, _Transfers],
):
    served, transfers = endpoint

    def put() -> bytes:
        return _put(transfers.signer.issue(method="PUT", project="p", path="a"), DATA)

    transfers.failure = asyncpg.PostgresConnectionError("the database went away")
    status, error = _exchange(served.port, put())
    assert (status, error["code"], error["reason"]) == (503, "UNAVAILABLE", "DATABASE_UNAVAILABLE")
    transfers.failure = RuntimeError("a bug")
    with capture_logs() as logged:
        status, error = _exchange(served.port, put())
    assert (status, error["code"], error["reason"]) == (500, "INTERNAL", "INTERNAL")
    correlation = error["message"].rpartition(" ")[2]
    assert [line["correlation_id"] for line in logged] == [correlation]


def test_a_stored_file_that_cannot_be_read_is_an_internal_error(
    endpoint: tuple[ByteEndpoint, _Transfers], monkeypatch: pytest.MonkeyPatch
):
    served, transfers = endpoint
    (transfers.root / "locked").write_bytes(DATA)
    opened = Path.open

    def refused(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.name == "locked":  # there, but not to be read (as root, no mode refuses)
            raise PermissionError(13, "Permission denied")
        return opened(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refused)
    token = transfers.signer.issue(
        method="GET", project="p", path="a", key="locked", size=len(DATA)
    )
    with capture_logs() as logged:
        status, error = _exchange(served.port, _get(token))
    assert (status, error["code"], error["reason"]) == (500, "INTERNAL", "INTERNAL")
    correlation = error["message"].rpartition(" ")[2]
    assert [line["correlation_id"] for line in logged] == [correlation]

    def failing(*args: Any) -> int:
        raise OSError(5, "Input/output error")  # the disk, in the middle of the file

    (transfers.root / "k").write_bytes(DATA)
    token = transfers.signer.issue(method="GET", project="p", path="a", key="k", size=len(DATA))
    monkeypatch.setattr(socket.socket, "sendfile", failing)
    with (
        capture_logs() as logged,
        socket.create_connection(("127.0.0.1", served.port), timeout=10) as connection,
    ):
        connection.sendall(_get(token))
        answer = connection.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 200") and not answer.endswith(DATA)  # short
    assert [line["log_level"] for line in logged] == ["error"]


def test_an_error_answer_leaves_the_rest_of_the_body_time_to_arrive(
    endpoint: tuple[ByteEndpoint, _Transfers],
):
    """Closing on bytes not read would reset the connection, and a reset may destroy the
    answer before the client reads it: the endpoint reads on (up to a bound) instead."""
    served, transfers = endpoint
    token = transfers.signer.issue(method="PUT", project="p", path="a", size=100)
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as connection:
        connection.sendall(_put(token, DATA))
        answer = connection.makefile("rb").read()  # to the end the endpoint sends
        assert b"HTTP/1.1 400" in answer
        piece = os.urandom(256 * 1024)
        for _ in range(8):  # the client still sending its body
            connection.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        connection.shutdown(socket.SHUT_WR)
        assert connection.recv(1) == b""


def test_refusals_carry_declared_reasons(endpoint: tuple[ByteEndpoint, _Transfers]):
    served, transfers = endpoint
    status, error = _exchange(served.port, b"GET /elsewhere HTTP/1.1\r\n\r\n")
    assert (status, error["code"], error["reason"]) == (404, "UNIMPLEMENTED", "NOT_IMPLEMENTED")
    gone = transfers.signer.issue(method="GET", project="p", path="a", key="gone", size=1)
    status, error = _exchange(served.port, _get(gone))
    assert (status, error["code"], error["reason"]) == (410, "ABORTED", "OBJECT_CHANGED")
    garbled = transfers.signer.issue(method="PUT", project="p", path="a")
    status, error = _exchange(served.port, _put(garbled, DATA, "X-Cairn-Sha256: not-a-sha256\r\n"))
    assert (status, error["code"]) == (400, "INVALID_ARGUMENT")
    assert "64 hexadecimal" in error["message"]
    token = transfers.signer.issue(method="PUT", project="p", path="a")
    digest = hashlib.sha256(DATA).hexdigest()
    status, _ = _exchange(served.port, _put(token, DATA, f"X-Cairn-Sha256: {digest}\r\n"))
    assert status == 200
    status, error = _exchange(served.port, _put(token, DATA))  # an upload's ticket: once
    assert (status, error["reason"]) == (403, "TICKET_USED")


@pytest.mark.parametrize(
    "size_line",
    [b"0" * 9000, b"0x5", b"-0", b"+5", b"5 5"],
    ids=["longer than a line may be", "0x", "a sign", "a plus", "two numbers"],
)
def test_a_malformed_chunk_size_is_refused(
    endpoint: tuple[ByteEndpoint, _Transfers], size_line: bytes
):
    """A size line past the longest line read was cut there and read as its start: 9,000
    zeros, then "5" and its chunk, published an empty object."""
    served, transfers = endpoint
    token = transfers.signer.issue(method="PUT", project="p", path="a")
    digest = hashlib.sha256(b"hello").hexdigest()
    request = (
        f"PUT /v1/transfers/{token} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + size_line
        + f"\r\nhello\r\n0\r\nX-Cairn-Sha256: {digest}\r\n\r\n".encode()
    )
    status, error = _exchange(served.port, request)
    assert (status, error["code"]) == (400, "INVALID_ARGUMENT"), error


def test_an_upload_with_no_sha256_to_check_is_refused(endpoint: tuple[ByteEndpoint, _Transfers]):
    """Neither its ticket nor its trailer names the bytes' sha256: nothing would check
    what arrived against what was sent."""
    served, transfers = endpoint
    token = transfers.signer.issue(method="PUT", project="p", path="a")
    status, error = _exchange(served.port, _put(token, DATA))
    assert (status, error["code"]) == (400, "INVALID_ARGUMENT")
    assert "sha256" in error["message"]


# Edits of a valid request: (what, where, bytes), where taken modulo its length.
_EDITS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "insert", "delete", "cut", "repeat", "bare lf"]),
        st.integers(0, len(DATA) * 2),
        st.binary(max_size=12)
        | st.sampled_from([b"\r\n", b"\r\n\r\n", b"0\r\n\r\n", b"f" * 18, b":", b"\xff\xfe"]),
    ),
    min_size=1,
    max_size=4,
)


def _edited(request: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    data = bytearray(request)
    for what, where, blob in edits:
        at = where % max(len(data), 1)
        if what == "flip" and data:
            data[at] ^= blob[0] if blob else 1
        elif what == "insert":
            data[at:at] = blob
        elif what == "delete":
            del data[at : at + len(blob) + 1]
        elif what == "cut":
            del data[at:]
        elif what == "repeat":
            data[at:at] = data[at : at + len(blob) + 1]
        elif (line_end := data.find(b"\r\n", at)) >= 0:  # a bare LF for a CRLF
            del data[line_end]
    return bytes(data)


def _answer_to(port: int, request: bytes) -> bytes:
    """The answer to request, sent whole and followed by the end of the stream."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)
        return connection.makefile("rb").read()


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same requests on every run
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(method=st.sampled_from(["PUT", "GET"]), edits=_EDITS)
def test_whatever_bytes_arrive_the_answer_is_declared_and_a_200_is_exactly_the_bytes(
    endpoint: tuple[ByteEndpoint, _Transfers], method: str, edits: list[tuple[str, int, bytes]]
):
    """A valid upload or download, its bytes edited at random (framing, head, ticket,
    body): the endpoint answers every one with an HTTP status and a declared error, never
    500, and answers 200 only for exactly the bytes of the ticket's object."""
    served, transfers = endpoint
    (transfers.root / "k").write_bytes(DATA)
    if method == "PUT":
        token = transfers.signer.issue(method="PUT", project="p", path="a")
        request = _put(token, DATA, f"X-Cairn-Sha256: {hashlib.sha256(DATA).hexdigest()}\r\n")
    else:
        token = transfers.signer.issue(method="GET", project="p", path="a", key="k", size=len(DATA))
        request = _get(token)
    transfers.reads.clear()
    answer = _answer_to(served.port, _edited(request, edits)).removeprefix(
        b"HTTP/1.1 100 Continue\r\n\r\n"
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status != 200:
        assert 400 <= status < 500 and json.loads(body)["code"] != "INTERNAL", answer
    elif method == "PUT":
        assert b"".join(transfers.reads) == DATA
    else:
        assert body == DATA


def test_a_used_upload_ticket_is_streamed_around_without_skipping_the_endpoint(
    endpoint: tuple[ByteEndpoint, _Transfers],
):
    served, transfers = endpoint
    token = transfers.signer.issue(method="PUT", project="p", path="a")
    at = _direct.Endpoint("127.0.0.1", served.port, token, None)
    assert _direct.upload(at, io.BytesIO(DATA), lambda done: None, _direct.Cut()) == b"stored"
    with pytest.raises(_direct.Unreachable) as refused:
        _direct.upload(at, io.BytesIO(DATA), lambda done: None, _direct.Cut())
    assert not refused.value.lasting  # this ticket's fault, not the endpoint's


def test_an_upload_that_trickles_is_cut_off(
    endpoint: tuple[ByteEndpoint, _Transfers], monkeypatch: pytest.MonkeyPatch
):
    """Each byte arrives well within a read's timeout, yet far below the pace a
    transfer must keep: the slot is given back, not held for as long as it trickles."""
    served, transfers = endpoint
    monkeypatch.setattr(pace, "IDLE_SECONDS", 0.5)
    monkeypatch.setattr(pace, "MIN_BYTES_PER_SECOND", 1000)
    token = transfers.signer.issue(method="PUT", project="p", path="a", size=50)
    head = f"PUT /v1/transfers/{token} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    with socket.create_connection(("127.0.0.1", served.port), timeout=0.2) as connection:
        connection.sendall(head.encode())
        trickled = _cut_while_trickling(connection, b"1\r\nx\r\n" * 50)
        assert trickled, "an upload trickled for a minute was read"


def test_a_download_read_too_slowly_is_cut_off(
    endpoint: tuple[ByteEndpoint, _Transfers], monkeypatch: pytest.MonkeyPatch
):
    served, transfers = endpoint
    monkeypatch.setattr(pace, "IDLE_SECONDS", 0.5)
    monkeypatch.setattr(pace, "MIN_BYTES_PER_SECOND", 1024 * 1024)
    monkeypatch.setattr(http_answers, "SEND_PIECE", 64 * 1024)
    size = 16 * 1024 * 1024
    (transfers.root / "big").write_bytes(os.urandom(size))
    token = transfers.signer.issue(method="GET", project="p", path="a", key="big", size=size)
    received = 0
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as connection:
        connection.sendall(_get(token))
        _taken_in(served)
        # About 160 KiB a second, until the endpoint lets the transfer go (what the
        # socket buffers hold still arrives after that).
        while served.connections and (piece := connection.recv(16 * 1024)):
            received += len(piece)
            time.sleep(0.1)
    assert not served.connections and received < size / 2


def test_one_byte_chunks_reach_the_writer_merged(endpoint: tuple[ByteEndpoint, _Transfers]):
    """Each HTTP chunk was handed to the hashing thread and queued to the writer on its
    own, two hand-offs between threads for every byte of a body of 1-byte chunks."""
    served, transfers = endpoint
    body = os.urandom(70_000)
    digest = hashlib.sha256(body).hexdigest()
    token = transfers.signer.issue(method="PUT", project="p", path="a", sha256=digest)
    chunks = b"".join(b"1\r\n%s\r\n" % body[i : i + 1] for i in range(len(body)))
    head = f"PUT /v1/transfers/{token} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    status, _ = _exchange(served.port, head.encode() + chunks + b"0\r\n\r\n")
    assert status == 200
    assert b"".join(transfers.reads) == body
    assert len(transfers.reads) <= len(body) // MERGE_BYTES + 1, f"{len(transfers.reads)} reads"


def test_an_upload_longer_than_announced_is_refused(endpoint: tuple[ByteEndpoint, _Transfers]):
    served, transfers = endpoint
    token = transfers.signer.issue(method="PUT", project="p", path="a", size=100)
    status, error = _exchange(served.port, _put(token, DATA))
    assert (status, error["code"]) == (400, "INVALID_ARGUMENT")
    assert "more than the 100 bytes" in error["message"]


def test_a_stopping_endpoint_sends_clients_to_the_streamed_path(
    endpoint: tuple[ByteEndpoint, _Transfers],
):
    served, transfers = endpoint
    token = transfers.signer.issue(method="PUT", project="p", path="a")
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as connection:
        _taken_in(served)
        served.close(grace=5)
        connection.sendall(_put(token, DATA))
        answer = connection.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 503") and b"SHUTTING_DOWN" in answer


@contextlib.contextmanager
def _fake_endpoint(answer: Callable[[socket.socket], None]) -> Iterator[_direct.Endpoint]:
    """A listener that reads one request's head, then answers as told."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            received = b""
            while b"\r\n\r\n" not in received:
                received += connection.recv(65536)
            answer(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield _direct.Endpoint("127.0.0.1", listener.getsockname()[1], "ticket", None)
    finally:
        listener.close()
        thread.join(10)


def _garbled(connection: socket.socket) -> None:
    connection.sendall(b"HTTP/1.1 abc\r\n\r\n")


def _continue_then(then: Callable[[socket.socket], None]) -> Callable[[socket.socket], None]:
    def answer(connection: socket.socket) -> None:
        connection.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        received = b""
        while not received.endswith(b"\r\n\r\n") or b"X-Cairn-Sha256" not in received:
            received += connection.recv(65536)
        then(connection)

    return answer


def _reset(connection: socket.socket) -> None:
    # Closed right after: a reset, not an orderly end.
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_a_garbled_answer_before_the_body_is_streamed_around():
    with _fake_endpoint(_garbled) as endpoint, pytest.raises(_direct.Unreachable):
        _direct.upload(endpoint, io.BytesIO(DATA), lambda done: None, _direct.Cut())


@pytest.mark.parametrize("then", [_garbled, _reset], ids=["garbled", "reset"])
def test_a_connection_that_breaks_after_the_body_is_unavailable(
    then: Callable[[socket.socket], None],
):
    with _fake_endpoint(_continue_then(then)) as endpoint, pytest.raises(UnavailableError):
        _direct.upload(endpoint, io.BytesIO(DATA), lambda done: None, _direct.Cut())


def test_a_partial_direct_write_then_einval_goes_on_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    data = os.urandom(_direct_io.BUFFER + 10)
    real_write, calls = os.write, []

    def write(descriptor: int, view: Any) -> int:
        calls.append(len(view))
        if len(calls) == 1:  # half of the first buffer is written, then the flag fails
            return real_write(descriptor, view[: len(view) // 2])
        if len(calls) == 2:
            raise OSError(22, "Invalid argument")
        return real_write(descriptor, view)

    with _direct_io.DirectWriter.create(tmp_path / "f.bin") as out:
        if not out._direct:
            pytest.skip("this file system refuses O_DIRECT")
        monkeypatch.setattr(_direct_io.os, "write", write)
        out.write(data)
    monkeypatch.undo()
    assert (tmp_path / "f.bin").read_bytes() == data


def test_a_file_that_differs_in_length_from_what_arrived_is_not_published(tmp_path: Path):
    with (tmp_path / "f.bin").open("wb") as out:
        out.write(DATA)
        out.flush()
        _check_length(out.fileno(), len(DATA))
        with pytest.raises(DataLoss):
            _check_length(out.fileno(), len(DATA) - 1)


def test_preallocation_keeps_free_space_and_the_file_length(tmp_path: Path):
    with (tmp_path / "f.bin").open("wb") as out:
        _preallocate(out.fileno(), 1 << 50)  # more than the disk: nothing allocated
        assert os.fstat(out.fileno()).st_blocks == 0
        _preallocate(out.fileno(), 1 << 20)
        assert os.fstat(out.fileno()).st_size == 0  # only blocks, not length


def test_preallocation_stops_where_it_would_eat_into_the_free_margin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    block, free = 4096, 2 << 30  # a 4 GiB disk with 2 GiB free: the margin is 1 GiB
    disk = SimpleNamespace(f_frsize=block, f_blocks=(4 << 30) // block, f_bavail=free // block)
    allocated: list[int] = []
    monkeypatch.setattr(filesystem.os, "fstatvfs", lambda descriptor: disk)
    monkeypatch.setattr(filesystem, "_fallocate", lambda fd, mode, at, size: allocated.append(size))
    _preallocate(0, free - filesystem.FREE_MARGIN_BYTES + 1)
    _preallocate(0, free - filesystem.FREE_MARGIN_BYTES)
    assert allocated == [free - filesystem.FREE_MARGIN_BYTES]


def test_the_sync_client_switches_direct_transfer_off():
    with cairn.sync.ArtifactClient.insecure_connection("127.0.0.1", 1, project="p") as client:
        client.direct_threshold = None
        assert client._target.direct_threshold is None
        assert "direct_threshold" not in vars(client)


async def test_a_byte_endpoint_port_in_use_names_its_setting(
    config: Config, pool: asyncpg.Pool
) -> None:
    """The server stopped with the socket's own words, "cairn serve: [Errno 98] Address
    already in use", naming neither the port nor the setting to change."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as refused:
            async with serving(config, pool, ["artifacts"], artifact_direct_port=port):
                pass
    assert str(refused.value) == (
        f"cannot listen on 127.0.0.1:{port} (CAIRN_ARTIFACT_DIRECT_PORT, on the host of "
        "CAIRN_LISTEN_ADDRESS): Address already in use"
    )
