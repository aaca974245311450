"""A server stream cut once its answer's headers arrived, before its first message, is
sent again as a unary call is: gRPC's own retries stop at the headers, and the client
raised UnavailableError for a read as safe to send again as any. An artifact's first
message is about 4 MiB, so a connection that dropped anywhere in it failed the read."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import cairn
from cairn.types import Metric
from tests.integration.test_exactly_once import late_proxy  # noqa: F401 (fixture)
from tests.proxy import AnswerDroppingProxy

STORED = os.urandom(6 * 1024 * 1024)


async def _history(tracking: cairn.TrackingClient, run_id: str) -> list[float]:
    return [point.value for point in await tracking.get_metric_history(run_id, "loss")]


async def _bulk_history(tracking: cairn.TrackingClient, run_id: str) -> list[float]:
    found = await tracking.get_metric_history_bulk([run_id], "loss")
    return [point.value for point in found[run_id]]


async def _iterated_history(tracking: cairn.TrackingClient, run_id: str) -> list[float]:
    return [point.value async for point in tracking.iter_metric_history(run_id, "loss")]


READS: dict[str, Callable[[cairn.TrackingClient, str], Awaitable[list[float]]]] = {
    "get_metric_history": _history,
    "get_metric_history_bulk": _bulk_history,
    "iter_metric_history": _iterated_history,
}


@pytest.mark.parametrize("read", READS)
async def test_a_history_cut_before_its_first_message_is_read_whole(
    late_proxy: AnswerDroppingProxy,  # noqa: F811
    unique: str,
    read: str,
) -> None:
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", late_proxy.port) as tracking:
        experiment_id = await tracking.create_experiment(f"cut-{unique}")
        run_id = (await tracking.create_run(experiment_id)).info.run_id
        await tracking.log_batch(run_id, metrics=[Metric("loss", 0.5, 1000, 0)])
        late_proxy.drop_next()
        assert await READS[read](tracking, run_id) == [0.5]
    assert late_proxy.dropped == 1


@pytest.fixture
async def stored_through(
    server_port: int,
    late_proxy: AnswerDroppingProxy,  # noqa: F811
    unique: str,
) -> AsyncIterator[tuple[cairn.ArtifactClient, str]]:
    """A client through the proxy, and the path of STORED in its project."""
    path = f"cut-{unique}/stored.bin"
    async with cairn.ArtifactClient.insecure_connection("127.0.0.1", server_port) as direct:
        await direct.upload(path, STORED)
    async with cairn.ArtifactClient.insecure_connection("127.0.0.1", late_proxy.port) as client:
        yield client, path


async def test_an_artifact_read_cut_in_its_first_message_is_read_whole(
    late_proxy: AnswerDroppingProxy,  # noqa: F811
    stored_through: tuple[cairn.ArtifactClient, str],
) -> None:
    client, path = stored_through
    late_proxy.drop_next()
    assert await client.read(path) == STORED
    assert late_proxy.dropped == 1
