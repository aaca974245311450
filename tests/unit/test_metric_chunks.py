"""The numpy side of writing metric chunks: decoding columns and ordering points."""

import math
import tracemalloc
import uuid

import numpy as np
import pytest

from cairn.tracking.v1 import tracking_pb2 as pb
from cairn_server.common.errors import InvalidArgument
from cairn_server.tracking import convert
from cairn_server.tracking.model import MetricColumns
from cairn_server.tracking.store import pgcopy
from cairn_server.tracking.store.chunk_layout import point_order


def test_columns_decode_bit_for_bit() -> None:
    values = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 0.1]
    steps = [2**63 - 1, -(2**63), 0, -1, 2**53 + 1, 7]
    message = pb.MetricColumns.FromString(
        pb.MetricColumns(
            keys=["a", "b"],
            key_indexes=[0, 1, 0, 1, 0, 1],
            values=values,
            steps=steps,
            timestamps_ms=steps[::-1],
        ).SerializeToString()
    )
    columns = convert.metric_columns(message, "metrics")
    assert columns.values.tobytes() == np.array(values, np.float64).tobytes()
    assert columns.steps.tolist() == steps and columns.timestamps_ms.tolist() == steps[::-1]
    assert columns.key_indexes.tolist() == [0, 1, 0, 1, 0, 1]
    assert (columns.values.dtype, columns.steps.dtype) == (np.float64, np.int64)


def test_a_point_naming_no_key_is_refused_by_its_position() -> None:
    message = pb.MetricColumns(
        keys=["a", "b"], key_indexes=[0, 1, 2, 7], values=[0.0] * 4, steps=[0] * 4
    )
    message.timestamps_ms.extend([0] * 4)
    with pytest.raises(InvalidArgument) as refused:
        convert.metric_columns(message, "metrics")
    assert [v.field for v in refused.value.violations] == ["metrics.key_indexes[2]"]
    assert "is 2: an index must be below the number of keys (2)" in str(refused.value)


def _columns(keys: int, key_indexes: list[int], steps: list[int], values: list[float]):
    return MetricColumns(
        [f"k{i}" for i in range(keys)],
        np.array(key_indexes, np.uint32),
        np.array(values, np.float64),
        np.array(steps, np.int64),
        np.zeros(len(steps), np.int64),
    )


@pytest.mark.parametrize("seed", range(20))
def test_point_order_is_that_of_a_sort_by_key_step_timestamp_and_value(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size, keys = int(rng.integers(1, 300)), int(rng.integers(1, 5))
    key_indexes = rng.integers(0, keys, size)
    # Odd seeds: each key in step order (the quick path); even: ties and disorder.
    steps = np.arange(size) if seed % 2 else rng.integers(0, 20, size)
    values = rng.choice([math.nan, 1.0, -1.0, 0.5], size)
    columns = _columns(keys, key_indexes.tolist(), steps.tolist(), values.tolist())
    order, steps_rise = point_order(columns)
    assert steps_rise == _each_keys_steps_rise(key_indexes.tolist(), steps.tolist())
    full = np.lexsort((columns.values, columns.timestamps_ms, columns.steps, columns.key_indexes))
    sorted_rows = np.stack([columns.key_indexes, columns.steps, columns.values])
    assert np.array_equal(sorted_rows[:, order], sorted_rows[:, full], equal_nan=True)


def _each_keys_steps_rise(key_indexes: list[int], steps: list[int]) -> bool:
    """Whether each key's steps rise in the order sent: no two of its points are equal."""
    last: dict[int, int] = {}
    for key, step in zip(key_indexes, steps, strict=True):
        if last.get(key, step - 1) >= step:
            return False
        last[key] = step
    return True


def test_laying_out_many_keys_takes_little_more_than_the_stream() -> None:
    """A list of each key's ten parts, joined, took twelve times the stream's size for
    one-point keys: 195 MB for the 16.6 MB of 100,000 keys, a batch within the limits."""
    count = 100_000
    points = np.arange(count, dtype=np.int64)
    keys = [f"{n:08}" for n in range(count)]
    bounds = [(n, n + 1) for n in range(count)]
    tracemalloc.start()
    try:
        stream = pgcopy.chunk_stream(uuid.uuid4(), keys, bounds, points, points * 0.5, points)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(stream) == 19 + count * 166 + 2  # header, rows, trailer
    assert peak < 2 * len(stream)
