"""A batch's metrics laid out with numpy: a history chunk per key, and each key's latest point."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from ..model import MetricColumns
from . import pgcopy


@dataclass(frozen=True)
class Chunks:
    """A batch's metrics as one history chunk per key: the COPY input of the chunks
    (empty without metrics) and each key's latest point, as columns in key order."""

    copy: bytes | bytearray
    latest: tuple[list[str], list[float], list[int], list[int]]

    @classmethod
    def of(cls, run_id: uuid.UUID, metrics: MetricColumns) -> Chunks:
        if not len(metrics):
            return cls(b"", ([], [], [], []))
        order, steps_rise = point_order(metrics)
        key_indexes = metrics.key_indexes[order]
        steps, values = metrics.steps[order], metrics.values[order]
        timestamps = metrics.timestamps_ms[order]
        starts = [0, *(np.flatnonzero(np.diff(key_indexes)) + 1).tolist()]
        ends = [*starts[1:], len(order)]
        keys = [metrics.keys[i] for i in key_indexes[starts].tolist()]
        copy = pgcopy.chunk_stream(
            run_id, keys, list(zip(starts, ends, strict=True)), steps, values, timestamps
        )
        # A key's latest point is its greatest (step, timestamp, value), NaN last: its
        # last, or the first sent of the points equal to it (0.0 and -0.0, NaNs), which
        # points whose steps rise never are.
        ends_at = np.array(ends) - 1
        if not steps_rise:
            ends_at = first_of_equals((key_indexes, steps, timestamps, values), ends_at)
        last = sorted(zip(keys, ends_at.tolist(), strict=True))
        at = [i for _, i in last]
        latest = (
            [key for key, _ in last],
            values[at].tolist(),
            steps[at].tolist(),
            timestamps[at].tolist(),
        )
        return cls(copy, latest)


def point_order(metrics: MetricColumns) -> tuple[np.ndarray, bool]:
    """The order that groups points by key, each key's by (step, timestamp, value) with
    NaN last, as PostgreSQL orders them; and whether each key's steps rise in the order
    sent (so no two of its points are equal)."""
    # Points mostly come in step order: a stable sort by key alone (a radix sort, for
    # 16-bit indexes) then orders them. For 1,000 points of 10 keys, 22 µs with the check
    # against 71 µs for a sort by all four.
    narrow = np.uint16 if len(metrics.keys) <= 1 << 16 else np.uint32
    by_key = np.argsort(metrics.key_indexes.astype(narrow), kind="stable")
    keys, steps = metrics.key_indexes[by_key], metrics.steps[by_key]
    same_key = keys[1:] == keys[:-1]
    if np.all(steps[1:][same_key] > steps[:-1][same_key]):
        return by_key, True
    columns = (metrics.values, metrics.timestamps_ms, metrics.steps, metrics.key_indexes)
    return np.lexsort(columns), False


def first_of_equals(columns: tuple[np.ndarray, ...], at: np.ndarray) -> np.ndarray:
    """For points at indexes `at` of columns (key, step, timestamp, value) sorted so, the
    first of the points equal to each, in the order they came: 0.0 and -0.0 are equal,
    as are NaNs, as PostgreSQL compares them. Points mostly have none: one look at the
    point before each, then, only when one is equal, one pass over all of them (a step
    back a pass took a second for 100,000 equal points)."""
    if not _equal_to_previous(columns, at).any():
        return at
    every = np.arange(len(columns[0]))
    equal = _equal_to_previous(columns, every)
    return np.maximum.accumulate(np.where(equal, 0, every))[at]


def _equal_to_previous(columns: tuple[np.ndarray, ...], at: np.ndarray) -> np.ndarray:
    """Whether each point at indexes `at` equals the one before it (none does the first)."""
    *exact, values = columns
    before = np.maximum(at - 1, 0)
    equal = (values[before] == values[at]) | (np.isnan(values[before]) & np.isnan(values[at]))
    for column in exact:
        equal &= column[before] == column[at]
    return equal & (at > 0)


async def once(data: bytes | bytearray) -> AsyncIterator[bytes | bytearray]:
    """data as COPY's source: an async iterable, which asyncpg sends on the event loop
    (a file object it reads in a worker thread, a hand-off per batch)."""
    yield data
