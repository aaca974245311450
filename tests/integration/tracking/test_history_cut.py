"""A metric history whose stream is cut after its first message (a connection dropped,
a server stopping) is read again from its start by get_metric_history and
get_metric_history_bulk, as a unary read is sent again (a stream cut before it is sent
again wherever it is read: test_streams_cut_early.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

import cairn
from cairn._channels import ATTEMPTS
from cairn._headers import REQUEST_ID_HEADER as ID
from cairn.exceptions import UnavailableError
from cairn.tracking.v1 import tracking_service_pb2_grpc as rpc
from cairn.types import Metric
from cairn_server.tracking.store.history import CHUNK_POINTS
from tests.proxy import AnswerDroppingProxy

_DATA = 0x0  # an HTTP/2 DATA frame
POINTS = 3 * CHUNK_POINTS  # three messages: the cut comes after the first
BATCH = 1000


class FirstMessageCuttingProxy(AnswerDroppingProxy):
    """Forwards everything; armed (`drop_next`), cuts the connection at the first frame
    of an answer's messages after its whole first message has passed."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self._first_message_left: int | None = None  # bytes of it not forwarded yet

    def _ends_at(self, kind: int, payload: bytes) -> bool:
        if kind != _DATA or not payload:
            return False
        if self._first_message_left is None:  # a message: its flag, its length, itself
            self._first_message_left = 5 + int.from_bytes(payload[1:5], "big")
        elif self._first_message_left <= 0:
            return True
        self._first_message_left -= len(payload)
        return False


@pytest.fixture
async def proxy(server_port: int) -> AsyncIterator[FirstMessageCuttingProxy]:
    proxy = FirstMessageCuttingProxy(server_port)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def through_proxy(
    proxy: FirstMessageCuttingProxy,
) -> AsyncIterator[cairn.TrackingClient]:
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", proxy.port) as client:
        yield client


@pytest.fixture
async def long_history(tracking: cairn.TrackingClient, run_id: str) -> list[Metric]:
    """run_id's metric `loss`: POINTS points, in step order."""
    points = [Metric("loss", step * 0.5, 1_700_000_000_000 + step, step) for step in range(POINTS)]
    for start in range(0, POINTS, BATCH):
        await tracking.log_batch(run_id, metrics=points[start : start + BATCH])
    return points


def _facts(points: list[Metric]) -> list[tuple[float, int, int]]:
    return [(p.value, p.timestamp, p.step) for p in points]


async def test_a_history_cut_after_its_first_message_is_read_again_whole(
    proxy: FirstMessageCuttingProxy,
    through_proxy: cairn.TrackingClient,
    run_id: str,
    long_history: list[Metric],
) -> None:
    """It raised UnavailableError, though the read was as safe to send again as any."""
    proxy.drop_next()
    points = await through_proxy.get_metric_history(run_id, "loss")
    assert proxy.dropped == 1
    assert _facts(points) == _facts(long_history)  # once each: not the first part twice


async def test_a_bulk_history_cut_after_its_first_message_is_read_again_whole(
    proxy: FirstMessageCuttingProxy,
    through_proxy: cairn.TrackingClient,
    tracking: cairn.TrackingClient,
    experiment_id: str,
    run_id: str,
    long_history: list[Metric],
) -> None:
    other = (await tracking.create_run(experiment_id)).info.run_id
    await tracking.log_metric(other, "loss", 1.0, step=0)
    proxy.drop_next()
    histories = await through_proxy.get_metric_history_bulk([run_id, other], "loss")
    assert proxy.dropped == 1
    assert _facts(histories[run_id]) == _facts(long_history)
    assert [p.value for p in histories[other]] == [1.0]


async def test_an_iterated_history_cut_after_its_first_message_raises(
    proxy: FirstMessageCuttingProxy,
    through_proxy: cairn.TrackingClient,
    run_id: str,
    long_history: list[Metric],
) -> None:
    """Points already handed to the loop cannot be taken back: the loop is told."""
    proxy.drop_next()
    taken = 0
    with pytest.raises(UnavailableError):
        async for _ in through_proxy.iter_metric_history(run_id, "loss"):
            taken += 1
    assert proxy.dropped == 1
    assert 0 < taken < POINTS


class _Refusing(rpc.TrackingServiceServicer):
    """A server refusing every history before its first message, as one whose readers
    are all busy does (DATABASE_BUSY), counting the reads it was sent and noting their
    request ids."""

    def __init__(self) -> None:
        self.reads = 0
        self.request_ids: set[str] = set()

    async def GetMetricHistory(self, request: object, context: grpc.aio.ServicerContext) -> None:
        self.reads += 1
        self.request_ids |= {v for k, v in context.invocation_metadata() or () if k == ID}
        await context.abort(grpc.StatusCode.UNAVAILABLE, "every reader is busy")

    GetMetricHistoryBulk = GetMetricHistory


@pytest.mark.parametrize("bulk", [False, True])
async def test_a_history_refused_before_its_first_message_is_sent_as_often_as_a_call(
    bulk: bool,
) -> None:
    """Sent again by gRPC's retry policy until its first message, and read again on
    top of that, a refused history was sent 16 times (each of 4 reads sent 4 times),
    past the call's timeout, where a unary call is sent 4: the client alone sends
    streams again now."""
    refusing, server = _Refusing(), grpc.aio.server()
    rpc.add_TrackingServiceServicer_to_server(refusing, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with cairn.TrackingClient.insecure_connection("127.0.0.1", port) as client:
            with pytest.raises(UnavailableError):
                if bulk:
                    await client.get_metric_history_bulk(["a" * 32], "loss")
                else:
                    await client.get_metric_history("a" * 32, "loss")
    finally:
        await server.stop(grace=None)
    assert refusing.reads == ATTEMPTS
    assert len(refusing.request_ids) == 1  # one call, as docs/client.md says: one id
