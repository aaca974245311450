"""Merging the small history chunks that single `log_metric` calls leave behind.

Every small write appends one chunk per key, so a key logged point by point becomes
thousands of one-point rows, and reading its history gets slower with each (20,000
points logged one by one read in 176 ms unmerged, 23 ms merged; 20 ms as one chunk).
The price: the one write in 64 that merges takes about a millisecond longer. When a small
write's chunk id is a multiple of `CHECK_EVERY`, its keys are checked: once a key has
`MIN_SMALL_CHUNKS` chunks of fewer than `SMALL_POINTS` points in one stretch of steps
between two large chunks, they are merged into one sorted chunk, in one statement (only
those of one stretch, so that chunks whose steps did not overlap still do not: small
chunks logged between large ones a few at a time stay as they are). A merged chunk is
merged again until it holds `SMALL_POINTS` points; after that it stays as it is. One
merge takes at most `MAX_MERGED` small chunks, those of the lowest steps, so its cost in
points is bounded however many have piled up
(batches of 33 to 255 points a key are small chunks that never merge by themselves:
1,200 of them once made one write merge 300,000 points, in 227 ms), and a merged chunk
fits one history message (`history.CHUNK_POINTS`); what is left goes to later merges.

A merged chunk takes the id of the last chunk it merged, not a new one: points equal in
step, timestamp and value read in the order of their chunks' ids (IN_ORDER), and with a
new id a merge of the lowest steps' chunks, leaving an equal point's chunk stored after
them, read that point first after the merge and last before it. Only a chunk stored
between two merged ones now changes places (docs/tracking.md, "Metric history").

Merging is safe beside anything else: concurrent writes append chunks the statement
does not see, a concurrent merge finds the chunks gone and writes nothing, and readers
see the chunks before or after, never half of it.
"""

from __future__ import annotations

import uuid

import asyncpg

SMALL_POINTS = 256
MIN_SMALL_CHUNKS = 64
CHECK_EVERY = 64
MAX_MERGED = 128  # chunks of fewer than SMALL_POINTS: under 32,768 points together
# The order of a key's points, as chunks store them and histories read them: by value
# among points of one step and timestamp (NaN last); points that compare equal too (0.0
# and -0.0, NaNs) in the order of their chunks and their places in them, as sent.
# PostgreSQL's sort is not stable: by value alone, a merge swapped the signs of zeros.
IN_ORDER = "step, ts, value, chunk_id, n"

# The key's chunks in step order, each numbered by the large chunks before it: the small
# ones of one number lie between the same two large ones, and only those are merged
# together. Merged across a large chunk, their steps spanned it, and a history whose
# chunks overlap is read by sorting all its points instead of streaming its chunks.
# A chunk is told small from its values' stored size first, read from the row (a large
# one's, from its pointer out of line): counting every chunk's points read all of the
# large ones, the key's whole history, at each check. An array of n doubles takes 24 + 8n
# bytes; one compressed (chunks stored before migration 0006) less, so its points are
# counted too, in an array small enough to be kept in the row.
_MERGE_SMALL_CHUNKS = f"""
WITH chunks AS (
    SELECT chunk_id, min_step,
           CASE WHEN pg_column_size("values") < 24 + 8 * $3 THEN cardinality("values") < $3
                ELSE false END AS small
    FROM tracking.metric_chunks
    WHERE run_id = $1 AND key = $2
), placed AS (
    SELECT chunk_id, min_step, small,
           count(*) FILTER (WHERE NOT small) OVER (ORDER BY min_step, chunk_id) AS stretch
    FROM chunks
), chosen AS (
    SELECT stretch FROM placed WHERE small
    GROUP BY stretch HAVING count(*) >= $4 ORDER BY stretch LIMIT 1
), small AS (
    SELECT chunk_id FROM placed JOIN chosen USING (stretch)
    WHERE small ORDER BY min_step, chunk_id LIMIT $5
), merged AS (
    DELETE FROM tracking.metric_chunks c
    WHERE c.run_id = $1 AND c.key = $2 AND c.chunk_id IN (SELECT chunk_id FROM small)
    RETURNING c.chunk_id, c.steps, c."values", c.timestamps_ms
), points AS (
    SELECT merged.chunk_id, p.* FROM merged,
        unnest(merged.steps, merged."values", merged.timestamps_ms) WITH ORDINALITY
        AS p(step, value, ts, n)
)
INSERT INTO tracking.metric_chunks
    (run_id, key, chunk_id, min_step, max_step, steps, "values", timestamps_ms)
OVERRIDING SYSTEM VALUE
SELECT $1, $2, max(chunk_id), min(step), max(step), array_agg(step ORDER BY {IN_ORDER}),
       array_agg(value ORDER BY {IN_ORDER}), array_agg(ts ORDER BY {IN_ORDER})
FROM points HAVING count(*) > 0"""


async def merge_small_chunks(
    conn: asyncpg.Connection, run_id: uuid.UUID, key: str, min_chunks: int = MIN_SMALL_CHUNKS
) -> None:
    """Merges the key's small chunks into one, if it has at least min_chunks of them."""
    await conn.execute(_MERGE_SMALL_CHUNKS, run_id, key, SMALL_POINTS, min_chunks, MAX_MERGED)
