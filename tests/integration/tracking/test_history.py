"""Metric history: order, chunked streaming, downsampling, the bulk read, and a
database connection lost in a read."""

import dataclasses
import math
import random
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest

import cairn
from cairn.exceptions import (
    NotFoundError,
    ResourceExhaustedError,
    from_grpc_error,
)
from cairn.tracking.v1 import tracking_service_pb2 as api
from cairn.tracking.v1 import tracking_service_pb2_grpc as rpc
from cairn.types import Metric
from cairn_server import catalog
from cairn_server.common import database
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer
from cairn_server.tracking.store import history
from cairn_server.tracking.store.history import CHUNK_POINTS
from tests.conftest import serving, with_overrides
from tests.proxy import PostgresProxy


async def test_history_is_in_step_order_across_chunks(
    tracking: cairn.TrackingClient, run_id: str
) -> None:
    count = CHUNK_POINTS * 2 + 17  # three streamed messages
    steps = list(range(count))
    random.Random(7).shuffle(steps)
    for start in range(0, count, 50_000):
        chunk = steps[start : start + 50_000]
        await tracking.log_batch(run_id, metrics=[Metric("loss", s * 0.5, s, s) for s in chunk])
    history = await tracking.get_metric_history(run_id, "loss")
    assert [m.step for m in history] == list(range(count))
    assert history[10] == Metric("loss", 5.0, 10, 10)


async def test_history_logged_in_step_order_streams_stored_chunks(
    tracking: cairn.TrackingClient, run_id: str
) -> None:
    for start in (0, 1000, 2000):  # disjoint step ranges: no re-sorting needed
        await tracking.log_batch(
            run_id, metrics=[Metric("acc", s, s, s) for s in range(start, start + 1000)]
        )
    await tracking.log_metric(run_id, "acc", 3000.0, timestamp=3000, step=3000)
    history = await tracking.get_metric_history(run_id, "acc")
    assert [m.step for m in history] == list(range(3001))


async def test_equal_steps_in_two_batches_order_by_timestamp(
    tracking: cairn.TrackingClient, run_id: str
) -> None:
    await tracking.log_batch(run_id, metrics=[Metric("x", 1.0, 20, 5), Metric("x", 0.0, 1, 0)])
    await tracking.log_batch(run_id, metrics=[Metric("x", 2.0, 10, 5), Metric("x", 3.0, 30, 9)])
    history = await tracking.get_metric_history(run_id, "x")
    assert [(m.step, m.timestamp) for m in history] == [(0, 1), (5, 10), (5, 20), (9, 30)]


async def test_downsampling_keeps_first_last_min_and_max(
    tracking: cairn.TrackingClient, run_id: str
) -> None:
    values = [math.sin(s / 50) for s in range(5000)]
    values[1234], values[3456] = -7.0, 9.0
    await tracking.log_batch(
        run_id, metrics=[Metric("wave", v, s, s) for s, v in enumerate(values)]
    )
    sampled = await tracking.get_metric_history(run_id, "wave", max_points=100)
    assert 4 <= len(sampled) <= 100
    steps = [m.step for m in sampled]
    assert steps == sorted(steps)
    assert steps[0] == 0 and steps[-1] == 4999
    assert {1234, 3456} <= set(steps)
    everything = await tracking.get_metric_history(run_id, "wave")
    for asked in (5000, 6000):  # as many points as asked for, or fewer: all of them
        assert await tracking.get_metric_history(run_id, "wave", max_points=asked) == everything
    assert len(await tracking.get_metric_history(run_id, "wave", max_points=4999)) < 5000


async def test_unknown_key_is_empty_and_unknown_run_not_found(
    tracking: cairn.TrackingClient, run_id: str
) -> None:
    assert await tracking.get_metric_history(run_id, "never-logged") == []
    with pytest.raises(NotFoundError):
        await tracking.get_metric_history("a" * 32, "loss")


async def test_bulk_history_for_several_runs(
    tracking: cairn.TrackingClient, experiment_id: str
) -> None:
    runs = [(await tracking.create_run(experiment_id)).info.run_id for _ in range(3)]
    for n, run in enumerate(runs):
        await tracking.log_batch(
            run, metrics=[Metric("acc", n + s / 10, s, s) for s in range(n + 1)]
        )
    found = await tracking.get_metric_history_bulk(runs, "acc")
    assert {run: [m.value for m in points] for run, points in found.items()} == {
        runs[0]: [0.0],
        runs[1]: [1.0, 1.1],
        runs[2]: [2.0, 2.1, 2.2],
    }
    # A run id in upper case, as the server takes it, is answered under the id given;
    # it raised a KeyError.
    shouted = await tracking.get_metric_history_bulk([runs[1].upper(), runs[2]], "acc")
    assert {run: [m.value for m in points] for run, points in shouted.items()} == {
        runs[1].upper(): [1.0, 1.1],
        runs[2]: [2.0, 2.1, 2.2],
    }


async def test_bulk_history_of_runs_given_as_a_generator(
    tracking: cairn.TrackingClient, experiment_id: str
) -> None:
    """The run ids were read twice, for the request and for the answer's keys: a
    generator gave the request every run and the answer none, and the server's first
    answer raised a bare KeyError."""
    runs = [(await tracking.create_run(experiment_id)).info.run_id for _ in range(3)]
    for n, run in enumerate(runs):
        await tracking.log_metric(run, "m", float(n))
    found = await tracking.get_metric_history_bulk((run for run in runs), "m")
    assert {run: [m.value for m in points] for run, points in found.items()} == {
        runs[0]: [0.0],
        runs[1]: [1.0],
        runs[2]: [2.0],
    }


async def test_a_bulk_read_naming_an_unknown_run_sends_nothing(
    tracking: cairn.TrackingClient, run_id: str
) -> None:
    """It was NOT_FOUND only once every run before the unknown one had been sent."""
    await tracking.log_batch(run_id, metrics=[Metric("acc", 0.5, 1, 1)])
    request = api.GetMetricHistoryBulkRequest(
        project=tracking.project, run_ids=[run_id, "a" * 32], metric_key="acc"
    )
    call = tracking._stub.GetMetricHistoryBulk(request)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.read()  # the first message is the error
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_history_of_large_batches_is_sent_in_messages_any_server_can_send(
    small_messages: int, unique: str
) -> None:
    """Stored chunks as large as a LogBatch (100,000 points of a key) were merged into
    messages of up to 130,000 points, past the 1 MiB a server may be given: the whole
    history of two acknowledged batches could not be read."""
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", small_messages) as tracking:
        experiment_id = await tracking.create_experiment(f"large-batches-{unique}")
        run_id = (await tracking.create_run(experiment_id)).info.run_id
        count = CHUNK_POINTS - 1
        for start in (0, count):  # disjoint: the stored chunks are sent as they are
            points = [
                Metric("loss", s * 0.5, 1_700_000_000_000 + s, s)
                for s in range(start, start + count)
            ]
            await tracking.log_batch(run_id, metrics=points)
        request = api.GetMetricHistoryRequest(
            project=tracking.project, run_id=run_id, metric_key="loss"
        )
        sizes = [
            len(reply.points.values) async for reply in tracking._stub.GetMetricHistory(request)
        ]
    assert sum(sizes) == 2 * count
    assert max(sizes) <= CHUNK_POINTS


async def test_downsampling_keeps_a_peak_beside_a_nan(
    tracking: cairn.TrackingClient, run_id: str
) -> None:
    """PostgreSQL sorts NaN above every number: taken for the bucket's largest value,
    it hid the peak of 1000."""
    values = [1.0, math.nan, 1000.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    await tracking.log_batch(run_id, metrics=[Metric("nan", v, s, s) for s, v in enumerate(values)])
    sampled = await tracking.get_metric_history(run_id, "nan", max_points=4)
    assert 1000.0 in [m.value for m in sampled]


async def test_downsampling_keeps_each_buckets_first_last_lowest_and_highest(
    tracking: cairn.TrackingClient, run_id: str
) -> None:
    """Against the points worked out here: buckets of consecutive points (position *
    buckets // total), each keeping its first and last points and the first holding its
    lowest and its highest number (a NaN is neither)."""
    rng = random.Random(3)
    choices = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1.0, 2.0]
    values = [rng.choice(choices) if rng.random() < 0.3 else rng.random() for _ in range(2000)]
    await tracking.log_batch(run_id, metrics=[Metric("mix", v, s, s) for s, v in enumerate(values)])
    max_points = 40
    sampled = await tracking.get_metric_history(run_id, "mix", max_points=max_points)
    buckets: dict[int, list[int]] = {}
    for position in range(len(values)):
        buckets.setdefault(position * (max_points // 4) // len(values), []).append(position)
    expected = set()
    for positions in buckets.values():
        expected |= {positions[0], positions[-1]}
        if numbers := [p for p in positions if not math.isnan(values[p])]:
            expected.add(min(numbers, key=lambda p: (values[p], p)))
            expected.add(min(numbers, key=lambda p: (-values[p], p)))
    assert [m.step for m in sampled] == sorted(expected)


async def test_a_stream_fetches_about_a_message_of_stored_chunks_at_a_time(
    tracking: cairn.TrackingClient, run_id: str, pool: asyncpg.Pool
) -> None:
    """The rows a fetch takes are counted from each chunk's size, read without reading
    its points: sized by the last row instead, a fetch after a one-point chunk (a
    LogMetric's) took 32,768 rows, millions of points when LogBatches' followed."""
    await tracking.log_metric(run_id, "mixed", 0.0, timestamp=0, step=0)
    for start in (1, 40_001):
        steps = range(start, start + 40_000)
        await tracking.log_batch(run_id, metrics=[Metric("mixed", 0.5, s, s) for s in steps])
    disjoint, points = await pool.fetchrow(history._CHUNKS_DISJOINT, uuid.UUID(run_id), "mixed")
    assert disjoint
    real = [1, 40_000, 40_000]
    assert len(points) == 3
    assert all(abs(estimate - count) <= 1 for estimate, count in zip(points, real, strict=True))
    assert list(history._fetches(points)) == [1, 1, 1]
    assert list(history._fetches([1_000] * 70)) == [32, 32, 6]
    assert len(await tracking.get_metric_history(run_id, "mixed")) == 80_001


async def test_the_sorts_of_a_bulk_read_share_one_statement_timeout(
    config: Config, pool: asyncpg.Pool, experiment_id: str, unique: str
) -> None:
    """Each run's downsampling sorts all its points before sending one, within the
    statement timeout; a read of many runs had that timeout for each of them, so one
    call could cost a hundred times it. Together they now have it once."""
    strict = dataclasses.replace(config, db_statement_timeout_seconds=1.0)
    strict_pool = await database.create_pool(strict.database_url, strict)
    server = CairnServer(strict, catalog.select(["tracking"]), strict_pool)
    port = await server.start()
    try:
        async with cairn.TrackingClient.insecure_connection("127.0.0.1", port) as client:
            runs = [(await client.create_run(experiment_id)).info.run_id for _ in range(12)]
            # About 0.2 s of sorting each on the development machine: far from the
            # timeout alone, four times it together. Written outside the server's
            # timeout, which a busy machine made the writing itself pass.
            await pool.execute(
                """INSERT INTO tracking.metric_chunks
                       (run_id, key, min_step, max_step, steps, "values", timestamps_ms)
                   SELECT r, 'loss', 0, $2 - 1, array_agg(s ORDER BY s),
                          array_agg(random() ORDER BY s), array_agg(s ORDER BY s)
                   FROM unnest($1::uuid[]) r, generate_series(0, $2 - 1) s GROUP BY r""",
                [uuid.UUID(r) for r in runs],
                120_000,
            )
            one = await client.get_metric_history_bulk(runs[:1], "loss", max_points=100)
            assert 0 < len(one[runs[0]]) <= 100
            started = time.monotonic()
            with pytest.raises(ResourceExhaustedError) as cut:
                await client.get_metric_history_bulk(runs, "loss", max_points=100)
            assert cut.value.reason == "STATEMENT_TIMEOUT"
            assert time.monotonic() - started < 10  # the timeout and one sort, not twelve
    finally:
        await server.stop(grace=1.0)
        await database.close_pool(strict_pool)


@pytest.fixture
async def through_proxy(
    config: Config, pool: asyncpg.Pool
) -> AsyncIterator[tuple[int, PostgresProxy]]:
    """A tracking server whose database connection passes through a proxy: one, so
    that each call uses the one a call before it used (pool: the database migrated)."""
    proxy = PostgresProxy(config.database_url)
    settings = with_overrides(config, database_url=await proxy.start(), db_pool_size=1)
    proxied = await database.create_pool(settings.database_url, settings)
    try:
        async with serving(settings, proxied, ["tracking"]) as port:
            yield port, proxy
    finally:
        await database.close_pool(proxied)
        await proxy.close()


async def test_a_connection_lost_at_the_end_of_a_read_leaves_the_history_whole(
    through_proxy: tuple[int, PostgresProxy], unique: str
) -> None:
    """A read's snapshot is committed once its last message was sent. The connection
    lost at that COMMIT answered UNAVAILABLE (DATABASE_UNAVAILABLE) after every point:
    no client retries a stream that sent a message, so get_metric_history and the bulk
    read raised and gave no point, and iter_metric_history raised after the last one.
    Every row was read by then, and the COMMIT of a read changes nothing."""
    port, proxy = through_proxy
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", port) as tracking:
        experiment_id = await tracking.create_experiment(f"commit-cut-{unique}")
        run_id = (await tracking.create_run(experiment_id)).info.run_id
        count = CHUNK_POINTS + 1000  # two messages
        await tracking.log_batch(
            run_id, metrics=[Metric("loss", s * 0.5, s, s) for s in range(count)]
        )

        async def iterated() -> list[Metric]:
            return [point async for point in tracking.iter_metric_history(run_id, "loss")]

        async def bulk() -> list[Metric]:
            return (await tracking.get_metric_history_bulk([run_id], "loss"))[run_id]

        for cuts, read in enumerate(
            [lambda: tracking.get_metric_history(run_id, "loss"), iterated, bulk], start=1
        ):
            proxy.cut_on(rb"^COMMIT")
            points = await read()
            assert len(proxy.cuts) == cuts  # the read's COMMIT was cut
            assert [m.step for m in points] == list(range(count))
        # Each lost connection was lent no more: the one after it read the history.
        assert len(await tracking.get_metric_history(run_id, "loss")) == count


async def test_a_connection_lost_before_the_last_row_still_fails_the_read(
    through_proxy: tuple[int, PostgresProxy], unique: str
) -> None:
    """Only the end of a read that took every row lets a lost connection go: one lost
    in the middle of a bulk read (its first run sent, its second's sort cut) answers
    UNAVAILABLE, never part of the history as all of it; the client reads it again
    from its start, and gets all of it once."""
    port, proxy = through_proxy
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", port) as tracking:
        experiment_id = await tracking.create_experiment(f"sort-cut-{unique}")
        sent, cut = [(await tracking.create_run(experiment_id)).info.run_id for _ in range(2)]
        await tracking.log_batch(sent, metrics=[Metric("loss", 0.5, s, s) for s in range(10)])
        for steps in (range(0, 10, 2), range(1, 10, 2)):  # overlapping: sorted in one query
            await tracking.log_batch(cut, metrics=[Metric("loss", 0.5, s, s) for s in steps])
        request = api.GetMetricHistoryBulkRequest(
            project="default", run_ids=[sent, cut], metric_key="loss"
        )
        proxy.cut_on(rb"\) p ORDER BY step, ts")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            answers = rpc.TrackingServiceStub(channel).GetMetricHistoryBulk(request)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                async for answer in answers:
                    assert answer.run_id == sent
        assert from_grpc_error(raised.value).reason == "DATABASE_UNAVAILABLE"
        assert len(proxy.cuts) == 1
        proxy.cut_on(rb"\) p ORDER BY step, ts")
        histories = await tracking.get_metric_history_bulk([sent, cut], "loss")
        assert len(proxy.cuts) == 2
        assert {run: [m.step for m in points] for run, points in histories.items()} == {
            sent: list(range(10)),
            cut: list(range(10)),
        }
