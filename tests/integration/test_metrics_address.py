"""The /metrics endpoint on the addresses CAIRN_METRICS_ADDRESS takes: port 0 is told
(the server logs it), a bracketed IPv6 host binds as grpc's addresses do, and one that
cannot be bound says which setting named it; the endpoint answers as prometheus_client's own
server does, yet bounds what a connection costs (time, a thread among a few)."""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import asyncpg
import prometheus_client
import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from cairn_server.common import metrics
from tests.conftest import eventually


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return str(answer.read().decode())


@pytest.mark.parametrize(("address", "host"), [("127.0.0.1:0", "127.0.0.1"), ("[::1]:0", "[::1]")])
async def test_port_0_binds_a_free_port_and_returns_it(
    pool: asyncpg.Pool, address: str, host: str
) -> None:
    """Before, serve returned nothing, and "[::1]:0" failed: "Name or service not known"."""
    port = metrics.serve(address, pool)
    assert isinstance(port, int) and port > 0
    page = await asyncio.to_thread(_scrape, f"http://{host}:{port}/metrics")
    assert "cairn_db_pool_max" in page and "cairn_rpc_calls" in page


async def test_an_address_that_cannot_be_bound_names_the_setting(pool: asyncpg.Pool) -> None:
    with pytest.raises(OSError) as refused:
        metrics.serve("no-such-host.invalid:0", pool)
    assert str(refused.value) == (
        "cannot serve metrics on no-such-host.invalid:0 (CAIRN_METRICS_ADDRESS, "
        "--metrics-address): Name or service not known"
    )


def _connection_threads() -> set[threading.Thread]:
    """The threads serving connections of the metrics servers now."""
    return {t for t in threading.enumerate() if t.name.endswith("(process_request_thread)")}


def _started_since(before: set[threading.Thread]) -> int:
    """The threads serving connections that are alive and were not before: a count of
    all threads also met those of earlier tests' connections ending meanwhile."""
    return len(_connection_threads() - before)


# What one connection may cost. Before, start_http_server gave each connection a thread
# with no timeout and no cap: 60 idle connections held 60 more threads for good.


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _closed_by_server(connection: socket.socket, within: float) -> bool:
    """Whether the server closes the connection within `within` seconds, reading (and
    dropping) whatever it answers first."""
    connection.settimeout(within)
    try:
        while connection.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:  # closed with bytes of ours unread
        pass
    return True


async def test_connections_past_the_bound_are_closed_and_hold_no_thread(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "MAX_CONNECTIONS", 4)
    monkeypatch.setattr(metrics, "MAX_CONNECTIONS_PER_CLIENT", 4)  # all from 127.0.0.1
    monkeypatch.setattr(metrics, "TIMEOUT_SECONDS", 60.0)  # held for the test
    port = metrics.serve("127.0.0.1:0", pool)
    base = _connection_threads()
    held, extra = [_connect(port) for _ in range(4)], []
    try:
        await eventually(lambda: _started_since(base) == 4, what="a thread each")
        extra = [_connect(port) for _ in range(20)]
        deadline = time.monotonic() + 5
        closed = [_closed_by_server(one, max(deadline - time.monotonic(), 0.01)) for one in extra]
        assert closed == [True] * 20
        assert _started_since(base) == 4
    finally:
        for connection in held + extra:
            connection.close()
    # The slots are given back: the threads end and a scrape is served again.
    await eventually(lambda: _started_since(base) == 0, what="the threads ended")
    assert "cairn_rpc_calls" in _scrape(f"http://127.0.0.1:{port}/metrics")


async def test_one_client_holds_a_share_of_the_connections(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One client holding every slot left none to the scraper."""
    monkeypatch.setattr(metrics, "TIMEOUT_SECONDS", 60.0)  # held for the test
    port = metrics.serve("127.0.0.1:0", pool)
    held = [_connect(port) for _ in range(metrics.MAX_CONNECTIONS_PER_CLIENT)]
    try:
        with _connect(port) as one_more:
            assert _closed_by_server(one_more, within=5)
    finally:
        for connection in held:
            connection.close()


async def test_an_idle_connection_is_closed_within_the_timeout(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "TIMEOUT_SECONDS", 0.5)
    port = metrics.serve("127.0.0.1:0", pool)
    base = _connection_threads()
    with _connect(port) as connection:
        opened = time.monotonic()
        assert _closed_by_server(connection, within=5)
        assert 0.4 < time.monotonic() - opened < 5
    await eventually(lambda: _started_since(base) == 0, what="its thread ended")


class _LargePage(Collector):
    """Enough series that an answer outgrows what the sockets' buffers take."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("probe_large_page", "many series", labels=["series"])
        for n in range(100_000):
            family.add_metric([f"{n:0>80}"], n)  # 10 MB in all
        yield family


async def test_an_answer_its_client_does_not_read_is_dropped_quietly(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Its write timed out inside wsgiref, which printed the timeout's traceback."""
    monkeypatch.setattr(metrics, "TIMEOUT_SECONDS", 0.5)
    large = _LargePage()
    prometheus_client.REGISTRY.register(large)
    try:
        port = metrics.serve("127.0.0.1:0", pool)
        base = _connection_threads()
        with socket.socket() as connection:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            connection.connect(("127.0.0.1", port))
            connection.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")  # then reads nothing
            await eventually(lambda: _started_since(base) > 0, what="its thread")
            await eventually(lambda: _started_since(base) == 0, what="it ended")
    finally:
        prometheus_client.REGISTRY.unregister(large)
    assert "Traceback" not in capfd.readouterr().err


def _exchange(port: int, request: bytes) -> tuple[bytes, set[bytes]]:
    """The status line and headers but Date and Content-Length, and the `# TYPE` lines."""
    with _connect(port) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    head = re.sub(rb"\r\n(Date|Content-Length): [^\r]*", b"", head)
    return head, {line for line in body.splitlines() if line.startswith(b"# TYPE")}


@pytest.mark.parametrize(
    "request_",
    [
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\n\r\n",
        b"HEAD /metrics HTTP/1.0\r\n\r\n",
        b"OPTIONS /metrics HTTP/1.0\r\n\r\n",
        b"nonsense\r\n\r\n",
    ],
)
async def test_answers_as_prometheus_client_own_server_does(
    pool: asyncpg.Pool, request_: bytes
) -> None:
    port = metrics.serve("127.0.0.1:0", pool)
    reference, _ = prometheus_client.start_http_server(0, addr="127.0.0.1")
    try:
        assert _exchange(port, request_) == _exchange(reference.server_port, request_)
    finally:
        reference.shutdown()
        reference.server_close()


class _TimedPage(Collector):
    """A series whose rendering takes RENDER_SECONDS of this thread's time, noting when
    each render started and ended; failing, the render then raises."""

    RENDER_SECONDS = 0.005

    def __init__(self, failing: bool) -> None:
        self.renders: list[tuple[float, float]] = []
        self._failing = failing

    def describe(self) -> Iterator[GaugeMetricFamily]:  # registered without a render
        yield GaugeMetricFamily("probe_timed_page", "a page slow to render")

    def collect(self) -> Iterator[GaugeMetricFamily]:
        started = time.monotonic()
        while time.monotonic() < started + self.RENDER_SECONDS:
            pass  # rendering, holding the interpreter as a large page does
        self.renders.append((started, time.monotonic()))
        if self._failing:
            raise RuntimeError("a collector failed")
        yield GaugeMetricFamily("probe_timed_page", "a page slow to render", 1)


def _scrape_answer(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return refused.code


@pytest.mark.parametrize("failing", [False, True])
async def test_scrapes_in_a_loop_take_a_bounded_share_of_the_process(
    pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    failing: bool,
) -> None:
    """Before, two connections scraping in a loop rendered back to back, taking the
    interpreter from the gRPC calls of the process: 811 calls a second fell to 100.
    A render that fails (500) rests as long, and writes no traceback on stderr at each
    request (a bad Accept header made prometheus_client fail so)."""
    # A connection's slot is given back just after its answer ends: a loop connecting
    # again at once may find both of its client's still taken.
    monkeypatch.setattr(metrics, "MAX_CONNECTIONS_PER_CLIENT", 4)
    timed = _TimedPage(failing)
    prometheus_client.REGISTRY.register(timed)
    try:
        port = metrics.serve("127.0.0.1:0", pool)
        url = f"http://127.0.0.1:{port}/metrics"

        def scrape_in_a_loop(client: int) -> None:
            for n in range(6):  # each asking apart: none is answered by another's render
                kind = f"name[]=probe_timed_page&name[]=apart-{client}-{n}"
                assert _scrape_answer(f"{url}?{kind}") == (500 if failing else 200)

        await asyncio.gather(*(asyncio.to_thread(scrape_in_a_loop, c) for c in range(2)))
    finally:
        prometheus_client.REGISTRY.unregister(timed)
    assert "Traceback" not in capfd.readouterr().err
    renders = sorted(timed.renders)
    assert len(renders) == 12
    for (started, ended), (next_started, _) in itertools.pairwise(renders):
        assert next_started - ended >= (ended - started) * 9  # so a tenth of the time


def _long_rests(monkeypatch: pytest.MonkeyPatch) -> _TimedPage:
    """A page rendering in 0.2 s, so resting 1.8 s, its answers kept as long: scrapes
    sent one after another come within a rest even on a loaded machine (with rests of
    0.45 s, a CI machine busy elsewhere sent them a second apart)."""
    monkeypatch.setattr(metrics, "MAX_REST_SECONDS", 10.0)
    monkeypatch.setattr(metrics, "KEPT_SECONDS", 10.0)
    timed = _TimedPage(failing=False)
    timed.RENDER_SECONDS = 0.2
    return timed


async def test_scrapes_queued_behind_a_render_are_answered_by_it(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each paid a render and a rest of its own: a scrape behind six looping connections
    waited 3-7 s, and Prometheus gives up at 10 s."""
    monkeypatch.setattr(metrics, "MAX_CONNECTIONS_PER_CLIENT", 8)  # all from 127.0.0.1
    timed = _long_rests(monkeypatch)  # the scrapes all come within one, however loaded
    prometheus_client.REGISTRY.register(timed)
    try:
        port = metrics.serve("127.0.0.1:0", pool)
        url = f"http://127.0.0.1:{port}/metrics"
        answers = await asyncio.gather(*(asyncio.to_thread(_scrape, url) for _ in range(6)))
    finally:
        prometheus_client.REGISTRY.unregister(timed)
    assert all("probe_timed_page 1.0" in answer for answer in answers)
    assert len(timed.renders) <= 2  # one, or two if the last came after its rest


def _scrape_with(url: str, headers: dict[str, str]) -> str:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as got:
        return str(got.headers["Content-Type"])


async def test_clients_asking_in_turn_for_two_kinds_share_their_answers(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer was kept only for the kind last rendered: clients asking in turn for
    OpenMetrics and the text format (or spelling their headers apart) rendered, and
    rested, at every request."""
    timed = _long_rests(monkeypatch)  # the three come within two rests
    prometheus_client.REGISTRY.register(timed)
    try:
        port = metrics.serve("127.0.0.1:0", pool)
        url = f"http://127.0.0.1:{port}/metrics"
        text = {"Accept-Encoding": "gzip"}
        openmetrics = {"Accept": "application/openmetrics-text", "Accept-Encoding": "gzip"}
        text_spelled_apart = {"Accept-Encoding": "gzip, deflate"}
        kinds = []
        for headers in (text, openmetrics, text_spelled_apart):
            kinds.append(await asyncio.to_thread(_scrape_with, url, headers))
    finally:
        prometheus_client.REGISTRY.unregister(timed)
    assert kinds[0] == kinds[2] != kinds[1]
    assert len(timed.renders) == 2


async def test_a_name_filter_finds_the_pool_gauges(pool: asyncpg.Pool) -> None:
    """They were registered before a pool was watched, so the filter knew no name of
    theirs and answered nothing."""
    port = metrics.serve("127.0.0.1:0", pool)
    page = await asyncio.to_thread(
        _scrape, f"http://127.0.0.1:{port}/metrics?name[]=cairn_db_pool_max"
    )
    assert page.splitlines()[-1].startswith("cairn_db_pool_max ")
