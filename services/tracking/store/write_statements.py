"""The write statements, which check the run and claim the request id; Claim reads their answer."""

from __future__ import annotations

import uuid
from typing import NamedTuple

import asyncpg

from ...common import idempotency
from . import compaction, sizes
from .runs import EXPERIMENT_CLAIMED, UNCLAIMED, check_writable

# LogMetric's request ids (from the call's metadata) share applied_batches with the
# request_id fields of LogBatch calls, which may not start so (validation.request_id).
METRIC_REQUEST_PREFIX = "LogMetric:"

# The latest point per (run, key) moves forward only: greatest step, then timestamp,
# then value, as MLflow decides it. The rows returned say which keys are new to the run
# (a row PostgreSQL inserted has no xmax), which _NEW_KEY_BYTES adds up.
_LATEST_UPSERT = """
    ON CONFLICT (run_id, key) DO UPDATE
        SET value = excluded.value, step = excluded.step, timestamp_ms = excluded.timestamp_ms
        WHERE (excluded.step, excluded.timestamp_ms, excluded.value)
            > (l.step, l.timestamp_ms, l.value)
    RETURNING l.key, l.xmax = 0 AS is_new"""
_NEW_KEY_BYTES = f"""SELECT sum(octet_length(key) + {sizes.ENTRY_BYTES}) AS bytes
    FROM latest WHERE is_new"""

# Both write statements begin so: they check the run (holding it against a concurrent
# delete; $1 project, $2 run) and claim the request id ($3, if any, with $4, the
# fingerprint of the request: Claim; a LogMetric's in `fingerprint`, a LogBatch's in
# `batch_fingerprint`, migration 0011). Unless the run may be written and the id was not
# claimed before, nothing is written and "applies" is false; the caller raises from the
# stages returned, or, for no row, as for a run not found: a run a garbage collection
# claimed (runs.UNCLAIMED) is gone to writes as to reads. The run's row is locked FOR
# {lock}: SHARE, or NO KEY UPDATE for a write that goes on to update the row, since two
# holders of a share lock that both upgrade it deadlock. The experiment's row is locked
# FOR KEY SHARE, as a run's creation locks it through its foreign key: a delete of the
# experiment waits for the writes under way (ExperimentStore.set_lifecycle), and a write
# that waited for a delete reads the experiment anew; a write waiting for its run read
# the experiment as it was when it began, and was stored after the delete was answered.
_CHECK_AND_CLAIM = f"""
WITH run AS (
    SELECT r.lifecycle_stage AS run_stage, e.lifecycle_stage AS experiment_stage,
        {EXPERIMENT_CLAIMED}
    FROM tracking.runs r JOIN tracking.experiments e USING (experiment_id)
    WHERE r.project = $1 AND r.run_id = $2 AND {UNCLAIMED}
    FOR {{lock}} OF r FOR KEY SHARE OF e
), writable AS (
    SELECT 1 FROM run WHERE run_stage = 1 AND experiment_stage = 1
), claim AS (
    INSERT INTO tracking.applied_batches (run_id, request_id, fingerprint, batch_fingerprint)
    SELECT $2, $3, CASE WHEN $3 LIKE '{METRIC_REQUEST_PREFIX}%' THEN $4::bytea END,
           CASE WHEN $3 NOT LIKE '{METRIC_REQUEST_PREFIX}%' THEN $4::bytea END
    FROM writable WHERE $3 <> ''
    ON CONFLICT DO NOTHING
    RETURNING 1
), applies AS (
    SELECT 1 FROM writable WHERE $3 = '' OR EXISTS (SELECT 1 FROM claim)
)"""

# One statement, so a small metrics-only write is atomic without a transaction of its
# own: after the check and claim, it appends one history chunk per key and moves each
# key's latest point. It locks the latest points in byte order of their keys (COLLATE
# "C", which for UTF-8 is code-point order), as BEGIN_BATCH does, so that the two do
# not deadlock under another collation. Points equal in step, timestamp and value (0.0
# and -0.0, NaNs) keep the order sent, and the first of them is the latest, as in
# COPY's chunks (chunk_layout.Chunks) and MLflow.
WRITE_SMALL = f"""{_CHECK_AND_CLAIM.format(lock="SHARE")}, points AS (
    SELECT p.* FROM unnest($5::text[], $6::float8[], $7::int8[], $8::int8[])
        WITH ORDINALITY AS p(key, value, step, ts, sent)
    WHERE EXISTS (SELECT 1 FROM applies)
), chunks AS (
    INSERT INTO tracking.metric_chunks
        (run_id, key, min_step, max_step, steps, "values", timestamps_ms)
    SELECT $2, key, min(step), max(step), array_agg(step ORDER BY step, ts, value, sent),
           array_agg(value ORDER BY step, ts, value, sent),
           array_agg(ts ORDER BY step, ts, value, sent)
    FROM points GROUP BY key
    RETURNING key, chunk_id
), latest AS (
    INSERT INTO tracking.latest_metrics AS l (run_id, key, value, step, timestamp_ms)
    SELECT DISTINCT ON (key COLLATE "C") $2, key, value, step, ts FROM points
    ORDER BY key COLLATE "C", step DESC, ts DESC, value DESC, sent
    {_LATEST_UPSERT}
), {sizes.growing(_NEW_KEY_BYTES, "$2", "$9")}
SELECT run_stage, experiment_stage, experiment_claimed,
    EXISTS (SELECT 1 FROM applies) AS applies,
    ARRAY(SELECT key FROM chunks WHERE chunk_id % {compaction.CHECK_EVERY} = 0) AS to_merge
FROM run"""

# WRITE_SMALL for the one point of a LogMetric, without the arrays to unnest, group
# and sort: 0.60 against 0.67 ms a call with its commit, measured from a client of
# PostgreSQL on this machine ($5 key, $6 value, $7 step, $8 timestamp).
WRITE_ONE = f"""{_CHECK_AND_CLAIM.format(lock="SHARE")}, chunk AS (
    INSERT INTO tracking.metric_chunks
        (run_id, key, min_step, max_step, steps, "values", timestamps_ms)
    SELECT $2, $5::text, $7::int8, $7::int8, ARRAY[$7::int8], ARRAY[$6::float8],
        ARRAY[$8::int8]
    WHERE EXISTS (SELECT 1 FROM applies)
    RETURNING chunk_id
), latest AS (
    INSERT INTO tracking.latest_metrics AS l (run_id, key, value, step, timestamp_ms)
    SELECT $2, $5::text, $6::float8, $7::int8, $8::int8
    WHERE EXISTS (SELECT 1 FROM applies)
    {_LATEST_UPSERT}
), {sizes.growing(_NEW_KEY_BYTES, "$2", "$9")}
SELECT run_stage, experiment_stage, experiment_claimed,
    EXISTS (SELECT 1 FROM applies) AS applies,
    EXISTS (SELECT 1 FROM chunk WHERE chunk_id % {compaction.CHECK_EVERY} = 0) AS to_merge
FROM run"""

# The first statement of a batch's transaction, so that a batch is five round trips
# (BEGIN, this, COPY's two, COMMIT) where it was seven: after the check and claim, it
# moves each key's latest point ($5..$8, one per key, in code-point order of the keys
# so that concurrent writes lock the same rows in the same order). A batch that renames
# the run (by its mlflow.runName tag) updates the run's row, and begins with
# BEGIN_RENAMING_BATCH.
BEGIN_BATCH = f"""{_CHECK_AND_CLAIM}, latest AS (
    INSERT INTO tracking.latest_metrics AS l (run_id, key, value, step, timestamp_ms)
    SELECT $2, p.* FROM unnest($5::text[], $6::float8[], $7::int8[], $8::int8[]) AS p
    WHERE EXISTS (SELECT 1 FROM applies)
    {_LATEST_UPSERT}
)
SELECT run_stage, experiment_stage, experiment_claimed,
    EXISTS (SELECT 1 FROM applies) AS applies, coalesce(({_NEW_KEY_BYTES}), 0) AS added_bytes
FROM run"""
BEGIN_RENAMING_BATCH = BEGIN_BATCH.format(lock="NO KEY UPDATE")
BEGIN_BATCH = BEGIN_BATCH.format(lock="SHARE")


class Claim(NamedTuple):
    """The request id a write claims ("" for none) and the fingerprint of its request,
    which tells a repeat from another request under the same id."""

    request_id: str
    fingerprint: bytes | None

    async def applied(
        self, conn: asyncpg.Connection, run_id: uuid.UUID, row: asyncpg.Record | None
    ) -> bool:
        """Whether the write statement that returned row (_CHECK_AND_CLAIM's) applied
        the write; False for a repeat of the request that claimed the id, answered as
        that one was even once the run is deleted (not once a garbage collection has
        claimed it: no row, not found). Raises REQUEST_ID_REUSED, as the
        interceptor does, when another request claimed it, and as check_writable when
        the run may not be written. (Ids claimed without a fingerprint, before
        fingerprints were kept, count as this request's.)"""
        if row is not None and row["applies"]:
            return True
        stored: bytes | None = None
        if self.request_id and row is not None:  # the run is of the caller's project
            stored = await conn.fetchval(
                """SELECT coalesce(fingerprint, batch_fingerprint, '') FROM tracking.applied_batches
                   WHERE run_id = $1 AND request_id = $2""",
                run_id,
                self.request_id,
            )
        if stored is None:  # not claimed: the run may not be written
            check_writable(run_id, row)
            return False  # claimed, and forgotten since (retention): taken for a repeat
        if stored and stored != self.fingerprint:
            reused = self.request_id.removeprefix(METRIC_REQUEST_PREFIX)
            raise idempotency.request_id_reused(reused)
        return False
