"""Small history chunks are merged, and a history reads the same before and after."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from itertools import pairwise

import asyncpg
import pytest

import cairn
from cairn.types import Metric
from cairn_server.tracking.store import compaction
from cairn_server.tracking.store.history import CHUNK_POINTS


async def _chunk_sizes(pool: asyncpg.Pool, run_id: str, key: str) -> list[int]:
    rows = await pool.fetch(
        "SELECT cardinality(steps) AS n FROM tracking.metric_chunks "
        "WHERE run_id = $1 AND key = $2 ORDER BY chunk_id",
        uuid.UUID(run_id),
        key,
    )
    return [row["n"] for row in rows]


async def test_points_logged_one_by_one_are_merged_as_they_come(
    tracking: cairn.TrackingClient, run_id: str, pool: asyncpg.Pool
) -> None:
    for step in range(200):
        await tracking.log_metric(run_id, "loss", 1.0 / (step + 1), step=step, timestamp=step + 1)
    sizes = await _chunk_sizes(pool, run_id, "loss")
    assert sum(sizes) == 200
    # 200 consecutive chunk ids hold a multiple of 64 at least 64 after the first.
    assert len(sizes) <= 200 - compaction.MIN_SMALL_CHUNKS + 1
    assert max(sizes) >= compaction.MIN_SMALL_CHUNKS
    history = await tracking.get_metric_history(run_id, "loss")
    assert history == [Metric("loss", 1.0 / (s + 1), s + 1, s) for s in range(200)]


async def test_a_merge_keeps_every_point_in_order(
    tracking: cairn.TrackingClient, run_id: str, pool: asyncpg.Pool
) -> None:
    big = [Metric("m", float(s), s, s) for s in range(1000, 1500)]  # stays as it is
    await tracking.log_batch(run_id, metrics=big)
    # Small chunks with overlapping steps, equal steps, NaN and infinities.
    specials = [math.nan, math.inf, -math.inf, 0.0, -0.0]
    for n in range(70):
        points = [
            Metric("m", specials[n % 5], n + 1, (n * 7) % 40),
            Metric("m", float(n), n + 1, 2000 - n),
        ]
        await tracking.log_batch(run_id, metrics=points)
    before = await tracking.get_metric_history(run_id, "m")
    async with pool.acquire() as conn:
        # Batches this small are one statement each, which merges now and then by itself
        # (when its chunk id is a multiple of 64): min_chunks=2 merges whatever is left.
        await compaction.merge_small_chunks(conn, uuid.UUID(run_id), "m", min_chunks=2)
    after = await tracking.get_metric_history(run_id, "m")
    assert sorted(await _chunk_sizes(pool, run_id, "m")) == [140, 500]
    assert [(m.step, m.timestamp) for m in after] == [(m.step, m.timestamp) for m in before]
    assert [repr(m.value) for m in after] == [repr(m.value) for m in before]


async def test_points_of_one_step_and_time_read_in_value_order_before_and_after_a_merge(
    tracking: cairn.TrackingClient, run_id: str, pool: asyncpg.Pool
) -> None:
    """Points of one step and timestamp come in the order of their values (NaN last),
    the order a chunk stores them in: before a merge, from chunks of their own read
    together, as after, from one merged chunk, and downsampled as whole."""
    for value in (math.nan, 1.0, -1.0):  # one chunk each, in the order no read gives
        await tracking.log_metric(run_id, "tied", value, step=5, timestamp=7)
    expected = ["-1.0", "1.0", "nan"]

    async def read() -> tuple[list[str], list[str]]:
        every = await tracking.get_metric_history(run_id, "tied")
        few = await tracking.get_metric_history(run_id, "tied", max_points=4)
        return [repr(m.value) for m in every], [repr(m.value) for m in few]

    assert await read() == (expected, expected)
    async with pool.acquire() as conn:
        await compaction.merge_small_chunks(conn, uuid.UUID(run_id), "tied", min_chunks=2)
    assert await _chunk_sizes(pool, run_id, "tied") == [3]
    assert await read() == (expected, expected)


async def _disjoint(pool: asyncpg.Pool, run_id: str, key: str) -> bool:
    """Whether no two chunks' step ranges overlap: a history read streams its chunks in
    order only then, and sorts every point of the key otherwise."""
    rows = await pool.fetch(
        "SELECT min_step, max_step FROM tracking.metric_chunks "
        "WHERE run_id = $1 AND key = $2 ORDER BY min_step, chunk_id",
        uuid.UUID(run_id),
        key,
    )
    return all(later["min_step"] > earlier["max_step"] for earlier, later in pairwise(rows))


async def test_a_merge_never_spans_a_large_chunk(
    tracking: cairn.TrackingClient, run_id: str, pool: asyncpg.Pool
) -> None:
    """Points logged one by one between large batches (an ActiveRun's sends, a journal
    synced beside live logging): merged oldest first, the small chunks made one whose
    steps spanned the large ones, and every read of the key then sorted all its points
    (2 million took past a 0.3 s statement timeout, where the chunks streamed)."""
    for c in range(20):
        batch = [Metric("mixed", float(s), s, s) for s in range(c * 1000, c * 1000 + 300)]
        await tracking.log_batch(run_id, metrics=batch)
        for step in (c * 1000 + 500, c * 1000 + 600):
            await tracking.log_metric(run_id, "mixed", 1.0, step=step, timestamp=step)
    before = await tracking.get_metric_history(run_id, "mixed")
    async with pool.acquire() as conn:
        await compaction.merge_small_chunks(conn, uuid.UUID(run_id), "mixed", min_chunks=2)
    assert await _disjoint(pool, run_id, "mixed")
    assert 2 in await _chunk_sizes(pool, run_id, "mixed")  # two small ones between large
    assert await tracking.get_metric_history(run_id, "mixed") == before


async def test_finding_small_chunks_reads_no_large_chunk_out_of_line(
    run_id: str, pool: asyncpg.Pool
) -> None:
    """Counting each chunk's points read the whole of every large one from its TOAST
    table: every 64th small write of a key with 20 million points read 161 MB (55-77 ms),
    the key's whole history, to merge nothing."""
    await pool.execute(
        """INSERT INTO tracking.metric_chunks
               (run_id, key, min_step, max_step, steps, "values", timestamps_ms)
           SELECT $1, 'long', c * 20000, c * 20000 + 19999,
                  array_agg(c * 20000 + p ORDER BY p), array_agg(p::float8 ORDER BY p),
                  array_agg(c * 20000 + p ORDER BY p)
           FROM generate_series(0, 19) c, generate_series(0, 19999) p GROUP BY c""",
        uuid.UUID(run_id),
    )
    # Run, as EXPLAIN ANALYZE does: with no small chunk, it merges nothing.
    plan = await pool.fetchval(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + compaction._MERGE_SMALL_CHUNKS,
        uuid.UUID(run_id),
        "long",
        compaction.SMALL_POINTS,
        compaction.MIN_SMALL_CHUNKS,
        compaction.MAX_MERGED,
    )
    top = json.loads(plan)[0]["Plan"]
    # 20 large chunks: 20 rows in the heap; their arrays, 940 pages, are not read.
    assert top["Shared Hit Blocks"] + top["Shared Read Blocks"] < 100, top


async def test_a_merge_keeps_the_order_of_points_that_compare_equal(
    tracking: cairn.TrackingClient, run_id: str, pool: asyncpg.Pool
) -> None:
    """0.0 and -0.0 of one step and timestamp compare equal: the merge's sort, which is
    not stable, swapped the signs of 1,792 of 7,000 such zeros, and the history read
    otherwise after the merge than before it."""
    for step in reversed(range(70)):  # steps logged in descending order
        zeros = [Metric("zeros", (0.0, -0.0)[(step * n) % 3 == 0], 5, step) for n in range(100)]
        await tracking.log_batch(run_id, metrics=zeros)
    before = await tracking.get_metric_history(run_id, "zeros")
    async with pool.acquire() as conn:
        await compaction.merge_small_chunks(conn, uuid.UUID(run_id), "zeros", min_chunks=2)
    after = await tracking.get_metric_history(run_id, "zeros")
    assert [repr(m.value) for m in after] == [repr(m.value) for m in before]


async def test_a_merge_of_the_lowest_chunks_keeps_equal_points_of_a_later_chunk_after(
    tracking: cairn.TrackingClient,
    run_id: str,
    pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A merge takes at most MAX_MERGED chunks, those of the lowest steps: here the
    first two of three, the -0.0 of step 5 merged and the 0.0 stored after it left.
    The merged chunk took a new id, after the 0.0's, and the history read 0.0 first."""
    monkeypatch.setattr(compaction, "MAX_MERGED", 2)
    for point in [Metric("tied", 1.0, 1, 0), Metric("tied", -0.0, 1, 5), Metric("tied", 0.0, 1, 5)]:
        await tracking.log_batch(run_id, metrics=[point])
    async with pool.acquire() as conn:
        await compaction.merge_small_chunks(conn, uuid.UUID(run_id), "tied", min_chunks=2)
    history = await tracking.get_metric_history(run_id, "tied")
    assert [repr(m.value) for m in history] == ["1.0", "-0.0", "0.0"]
    assert sorted(await _chunk_sizes(pool, run_id, "tied")) == [1, 2]  # merged as asked


async def test_merges_at_once_keep_every_point_once_in_order(
    tracking: cairn.TrackingClient,
    run_id: str,
    pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A merged chunk takes the id of the last chunk it merged: merges at once of
    overlapping sets (each of at most 8 chunks) neither lose, double nor reorder a point,
    nor insert an id twice."""
    monkeypatch.setattr(compaction, "MAX_MERGED", 8)
    for n in range(40):
        points = [Metric("at-once", (0.0, -0.0)[n % 2], 1, n % 10), Metric("at-once", n, 2, n)]
        await tracking.log_batch(run_id, metrics=points)
    before = await tracking.get_metric_history(run_id, "at-once")

    async def merge() -> None:
        async with pool.acquire() as conn:
            await compaction.merge_small_chunks(conn, uuid.UUID(run_id), "at-once", min_chunks=2)

    for _ in range(4):
        await asyncio.gather(*(merge() for _ in range(4)))
    after = await tracking.get_metric_history(run_id, "at-once")
    assert [(m.step, m.timestamp, repr(m.value)) for m in after] == [
        (m.step, m.timestamp, repr(m.value)) for m in before
    ]
    assert sum(await _chunk_sizes(pool, run_id, "at-once")) == 80


async def test_fewer_small_chunks_than_the_threshold_stay(
    tracking: cairn.TrackingClient, run_id: str, pool: asyncpg.Pool
) -> None:
    for step in range(10):
        await tracking.log_batch(run_id, metrics=[Metric("few", 1.0, step + 1, step)])
    async with pool.acquire() as conn:
        await compaction.merge_small_chunks(conn, uuid.UUID(run_id), "few")
    assert await _chunk_sizes(pool, run_id, "few") == [1] * 10
    async with pool.acquire() as conn:
        await compaction.merge_small_chunks(conn, uuid.UUID(run_id), "few", min_chunks=2)
    assert await _chunk_sizes(pool, run_id, "few") == [10]


async def test_a_merge_takes_a_bounded_number_of_chunks_oldest_first(
    tracking: cairn.TrackingClient, run_id: str, pool: asyncpg.Pool
) -> None:
    """Batches of 33 to 255 points a key leave small chunks that never merge by
    themselves; one merge once took every one of them, however many."""
    count, points = compaction.MAX_MERGED + 100, 250
    await pool.execute(
        """INSERT INTO tracking.metric_chunks
               (run_id, key, min_step, max_step, steps, "values", timestamps_ms)
           SELECT $1, 'piled', c * $3, c * $3 + $3 - 1,
                  array_agg(c * $3 + p ORDER BY p), array_agg(p::float8 ORDER BY p),
                  array_agg(c * $3 + p ORDER BY p)
           FROM generate_series(0, $2 - 1) c, generate_series(0, $3 - 1) p GROUP BY c""",
        uuid.UUID(run_id),
        count,
        points,
    )
    async with pool.acquire() as conn:
        await compaction.merge_small_chunks(conn, uuid.UUID(run_id), "piled")
    sizes = await _chunk_sizes(pool, run_id, "piled")
    assert sorted(sizes) == [points] * (count - compaction.MAX_MERGED) + [
        points * compaction.MAX_MERGED
    ]
    assert max(sizes) <= CHUNK_POINTS  # one message's worth
    merged = await pool.fetchrow(
        """SELECT min_step, max_step FROM tracking.metric_chunks
           WHERE run_id = $1 AND key = 'piled' ORDER BY cardinality(steps) DESC LIMIT 1""",
        uuid.UUID(run_id),
    )
    assert tuple(merged) == (0, compaction.MAX_MERGED * points - 1)  # the oldest chunks
    history = await tracking.get_metric_history(run_id, "piled")
    assert [m.step for m in history] == list(range(count * points))
