"""Points round-trip bit for bit through both write paths of a batch: one statement
with array parameters (small batches) and binary COPY of chunks laid out with numpy."""

import math
import random
import struct
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

import cairn
from cairn import _headers
from cairn.types import Metric
from cairn_server.common import answers
from cairn_server.tracking import convert, retention
from cairn_server.tracking.store import pgcopy
from cairn_server.tracking.store.writes import STATEMENT_MAX_POINTS
from tests.conftest import on_event_loop

KEYS = ["loss", "ключ/ü 🙂", "k" * 250]
BIGGEST, SMALLEST = 2**63 - 1, -(2**63)
T = TypeVar("T")


def _special_points(key: str) -> list[Metric]:
    """Extreme steps, every kind of float, and ties on step and on (step, timestamp)."""
    values = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308]
    points = [Metric(key, v, 1_000 + i, SMALLEST + i) for i, v in enumerate(values)]
    return [
        *points,
        Metric(key, 1.5, BIGGEST, BIGGEST),
        Metric(key, 2.5, 7, -1),
        Metric(key, 0.5, 3, -1),  # the same step, an earlier timestamp: first
        Metric(key, math.nan, 3, -1),  # the same step and timestamp: NaN last
    ]


def _batch(size: int) -> list[Metric]:
    points = [p for key in KEYS for p in _special_points(key)]
    filler = size - len(points)
    points += [Metric(KEYS[i % 3], i / 7, i, 10 + i) for i in range(filler)]
    random.Random(size).shuffle(points)
    return points


def _order(point: Metric) -> tuple[int, int, bool, float]:
    return (point.step, point.timestamp, math.isnan(point.value), point.value)


def _exact(points: list[Metric]) -> list[tuple[int, int, bytes]]:
    return [(p.step, p.timestamp, struct.pack(">d", p.value)) for p in points]


@pytest.mark.parametrize("size", [30, 2 * STATEMENT_MAX_POINTS + 7, 3000])
async def test_points_round_trip_exactly_in_order(
    tracking: cairn.TrackingClient, run_id: str, size: int
) -> None:
    assert size >= 30  # the special points alone
    points = _batch(size)
    await tracking.log_batch(run_id, metrics=points)
    latest = (await tracking.get_run(run_id)).data.latest_metrics
    for key in KEYS:
        expected = sorted((p for p in points if p.key == key), key=_order)
        history = await tracking.get_metric_history(run_id, key)
        assert _exact(history) == _exact(expected)
        assert _exact([latest[key]]) == _exact([Metric(key, 1.5, BIGGEST, BIGGEST)])


@pytest.mark.parametrize("earlier", [0, 2 * STATEMENT_MAX_POINTS])
@pytest.mark.parametrize("first", [0.0, -0.0])
async def test_of_points_equal_in_step_time_and_value_the_first_logged_is_latest(
    tracking: cairn.TrackingClient, run_id: str, earlier: int, first: float
) -> None:
    """0.0 and -0.0, or two NaNs, compare equal: of such points at a key's greatest step
    and timestamp, the first logged is its latest, as in MLflow, on both write paths
    (`earlier` points before them take a batch to COPY), and one batch's history keeps
    them in the order logged."""
    payloads = ["7ff8000000000001", "fff8000000000002"]
    nans = [struct.unpack(">d", bytes.fromhex(bits))[0] for bits in payloads]
    if math.copysign(1, first) < 0:
        nans.reverse()
    tied = {"zero": [first, -first], "nan": nans}
    points = [Metric(key, float(i), i, 0) for key in tied for i in range(earlier // 2)]
    points += [Metric(key, value, 9, 9) for key, values in tied.items() for value in values]
    await tracking.log_batch(run_id, metrics=points)
    latest = (await tracking.get_run(run_id)).data.latest_metrics
    for key, values in tied.items():
        assert _exact([latest[key]]) == _exact([Metric(key, values[0], 9, 9)])
        history = await tracking.get_metric_history(run_id, key)
        assert _exact(history) == _exact([p for p in points if p.key == key])


async def test_a_log_metric_repeated_with_its_request_id_is_stored_once(
    tracking: cairn.TrackingClient, run_id: str, unique: str
) -> None:
    same_id = [(_headers.REQUEST_ID_HEADER, f"metric-{unique}")]
    for _ in range(2):  # the same request: its timestamp too
        await tracking.log_metric(run_id, "once", 1.0, step=1, timestamp=1, metadata=same_id)
    # A LogBatch whose request_id field is the same text is another write.
    await tracking.log_batch(run_id, [Metric("once", 2.0, 1, 2)], request_id=f"metric-{unique}")
    await tracking.log_metric(run_id, "once", 3.0, step=3)
    history = await tracking.get_metric_history(run_id, "once")
    assert [p.value for p in history] == [1.0, 2.0, 3.0]


async def test_points_logged_in_step_order_keep_it(
    tracking: cairn.TrackingClient, run_id: str
) -> None:
    """Keys interleaved, each in step order: ordered by key alone (chunk_layout.point_order)."""
    points = [Metric(KEYS[i % 3], math.sin(i), 5_000 - i, i // 3 * 2) for i in range(600)]
    await tracking.log_batch(run_id, metrics=points)
    for key in KEYS:
        history = await tracking.get_metric_history(run_id, key)
        assert _exact(history) == _exact([p for p in points if p.key == key])


async def test_log_metric_ids_are_forgotten_before_log_batch_ids(
    tracking: cairn.TrackingClient, run_id: str, pool, unique: str
) -> None:
    """LogMetric's ids are kept as long as other writes' ids, not as long as a journal's;
    they are deleted in slices, until none is left."""
    for i in range(3):
        await tracking.log_metric(
            run_id, "m", 1.0, metadata=[(_headers.REQUEST_ID_HEADER, f"metric{i}-{unique}")]
        )
    await tracking.log_batch(run_id, [Metric("m", 2.0, 1, 2)], request_id=f"batch-{unique}")
    kept = "SELECT request_id FROM tracking.applied_batches WHERE request_id LIKE $1"
    await retention.prune(pool, retention_seconds=3600, metric_retention_seconds=3600)
    assert len(await pool.fetch(kept, f"%-{unique}")) == 4
    pruned = await retention.prune(
        pool, retention_seconds=3600, metric_retention_seconds=0, slice_rows=2
    )
    assert pruned >= 3
    assert [r["request_id"] for r in await pool.fetch(kept, f"%-{unique}")] == [f"batch-{unique}"]


async def test_a_batch_of_many_keys_is_read_and_laid_out_off_the_event_loop(
    tracking: cairn.TrackingClient, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading 100,000 keys into columns and laying out their chunks held the event loop
    about a second, every other call of the server waiting on it."""
    monkeypatch.setattr(answers, "ON_LOOP_ENTRIES", 10)
    on_loop: list[bool] = []

    def noting(work: Callable[..., T]) -> Callable[..., T]:
        def noted(*args: Any) -> T:
            on_loop.append(on_event_loop())
            return work(*args)

        return noted

    monkeypatch.setattr(convert, "metric_columns", noting(convert.metric_columns))
    monkeypatch.setattr(pgcopy, "chunk_stream", noting(pgcopy.chunk_stream))
    points = [Metric(f"k{n:02}", float(n), 0, step) for n in range(11) for step in range(50)]
    await tracking.log_batch(run_id, metrics=points)

    assert on_loop == [False, False]
    latest = (await tracking.get_run(run_id)).data.latest_metrics
    assert {key: metric.step for key, metric in latest.items()} == {
        f"k{n:02}": 49 for n in range(11)
    }
