"""Which of a batch's points equal in step, timestamp and value is a key's latest: the
first sent (chunk_layout.first_of_equals), found in one pass however many are equal."""

import numpy as np

from cairn_server.tracking.store.chunk_layout import first_of_equals


def _columns(keys: list[int], steps: list[int], values: list[float]) -> tuple[np.ndarray, ...]:
    steps_array = np.array(steps, dtype=np.int64)
    return np.array(keys), steps_array, steps_array.copy(), np.array(values)


def test_a_point_equal_to_none_before_it_is_its_own_first() -> None:
    columns = _columns([0, 0, 1], [1, 2, 2], [0.0, 0.0, 0.0])
    assert first_of_equals(columns, np.array([1, 2])).tolist() == [1, 2]


def test_equal_points_run_back_to_their_first_within_their_key() -> None:
    # Key 0: 0.0, -0.0 and 0.0 at step 2 are equal; key 1's equal points begin after it.
    columns = _columns([0, 0, 0, 0, 1, 1], [1, 2, 2, 2, 2, 2], [5.0, 0.0, -0.0, 0.0, 0.0, 0.0])
    assert first_of_equals(columns, np.array([3, 5])).tolist() == [1, 4]


def test_nans_of_any_payload_are_equal() -> None:
    payloads = [
        np.frombuffer(bytes.fromhex(h), ">f8")[0] for h in ("7ff8000000000001", "fff8000000000002")
    ]
    columns = _columns([0, 0, 0], [1, 1, 1], [1.0, *payloads])
    assert first_of_equals(columns, np.array([2])).tolist() == [1]


def test_the_largest_batch_of_equal_points_runs_back_to_its_first() -> None:
    count = 100_000  # a LogBatch's most: each step back a pass took a second
    columns = _columns([0] * count, [0] * count, [0.0] * count)
    assert first_of_equals(columns, np.array([count - 1])).tolist() == [0]
