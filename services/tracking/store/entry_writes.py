"""A run's params, tags and inputs: params written once, tags set and deleted, inputs upserted."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from ...common.errors import FailedPrecondition, NotFound
from ..model import RunInput
from . import sizes
from .runs import lock_writable


class EntryWrites:
    """Tags deleted and inputs logged, parts of a `RunWriter`; a batch's params and tags
    are written in its transaction (write_params, write_tags)."""

    _pool: asyncpg.Pool
    _bound: int

    async def delete_tag(self, project: str, run_id: str, key: str) -> None:
        run_uuid = uuid.UUID(run_id)
        async with self._pool.acquire() as conn, conn.transaction():
            await lock_writable(conn, project, run_uuid)
            freed = await conn.fetchval(
                f"""DELETE FROM tracking.tags WHERE run_id = $1 AND key = $2
                    RETURNING octet_length(key) + octet_length(value) + {sizes.ENTRY_BYTES}""",
                run_uuid,
                key,
            )
            if freed is not None:
                await sizes.shrink(conn, run_uuid, freed)
        if freed is None:
            raise NotFound(
                "TAG_NOT_FOUND", f"run {run_id} has no tag {key!r}", metadata={"key": key}
            )

    async def log_inputs(self, project: str, run_id: str, inputs: Sequence[RunInput]) -> None:
        run_uuid = uuid.UUID(run_id)
        await sizes.within_bound(
            self._pool, run_uuid, self._bound, lambda: self._write_inputs(project, run_uuid, inputs)
        )

    async def _write_inputs(
        self, project: str, run_uuid: uuid.UUID, inputs: Sequence[RunInput]
    ) -> None:
        # In one order for every write, so that two writes of the same inputs never
        # deadlock.
        inputs = sorted(_last_of_each_key(inputs), key=_input_key)
        async with self._pool.acquire() as conn, conn.transaction():
            await lock_writable(conn, project, run_uuid)
            replaced = await conn.fetchval(
                _REPLACED_INPUTS,
                run_uuid,
                [i.kind for i in inputs],
                [i.uri for i in inputs],
                [i.context for i in inputs],
            )
            await conn.executemany(
                """INSERT INTO tracking.run_inputs (run_id, kind, name, uri, digest, context)
                   VALUES ($1, $2, $3, $4, $5, $6)
                   ON CONFLICT (run_id, kind, uri, context)
                   DO UPDATE SET name = excluded.name, digest = excluded.digest""",
                [(run_uuid, i.kind, i.name, i.uri, i.digest, i.context) for i in inputs],
            )
            added = sum(
                sizes.entry_bytes(i.kind, i.name, i.uri, i.digest, i.context) for i in inputs
            )
            await sizes.grow(conn, run_uuid, added - replaced, self._bound)


async def write_params(conn: asyncpg.Connection, run_id: uuid.UUID, params: dict[str, str]) -> int:
    """Writes the params new to the run; params are immutable: the same value again is
    fine, another value is refused, and the caller's transaction rolls back.

    The values are compared after the insert, in a statement of its own: the insert
    waits for a concurrent write of the same key to commit, and only a statement begun
    after sees what it wrote. (Compared before, both writes of one key with two values
    were answered OK, and the second value was dropped.)

    Returns:
        What the params new to the run add to its total.
    """
    keys = sorted(params)  # in one order for every write, so two never deadlock
    values = [params[key] for key in keys]
    added: int = await conn.fetchval(
        f"""WITH added AS (
                INSERT INTO tracking.params (run_id, key, value)
                SELECT $1, k, v FROM unnest($2::text[], $3::text[]) AS t(k, v)
                ORDER BY k COLLATE "C"
                ON CONFLICT (run_id, key) DO NOTHING
                RETURNING key, value)
            SELECT coalesce(sum(octet_length(key) + octet_length(value) + {sizes.ENTRY_BYTES}), 0)
            FROM added""",
        run_id,
        keys,
        values,
    )
    clash = await conn.fetchrow(
        """SELECT p.key, p.value AS old, n.value AS new
           FROM tracking.params p JOIN unnest($2::text[], $3::text[]) AS n(key, value)
             ON p.key = n.key
           WHERE p.run_id = $1 AND p.value <> n.value ORDER BY p.key LIMIT 1""",
        run_id,
        keys,
        values,
    )
    if clash is not None:
        raise FailedPrecondition(
            "PARAM_ALREADY_LOGGED",
            f"param {clash['key']!r} of run {run_id.hex} is {clash['old']!r} and cannot change "
            f"to {clash['new']!r}: params are immutable",
            metadata={"key": clash["key"], "old_value": clash["old"], "new_value": clash["new"]},
        )
    return added


async def write_tags(conn: asyncpg.Connection, run_id: uuid.UUID, tags: dict[str, str]) -> int:
    """Returns what the tags add to the run's size: their entries, less those they replace."""
    keys = sorted(tags)  # in one order for every write, so two never deadlock
    replaced: int = await conn.fetchval(_REPLACE_TAGS, run_id, keys, [tags[k] for k in keys])
    return sum(sizes.entry_bytes(key, value) for key, value in tags.items()) - replaced


# Sets tags ($2 keys, $3 values, in code-point order of the keys) on run $1 and returns
# what the tags they replace took. Those are read and locked first (the insert's
# condition waits for them), so no other write changes them in between; a tag another
# write adds meanwhile is replaced without being subtracted, which leaves the run's
# total above what it holds, as it may be. Rows are locked and inserted in key order,
# so that two writes of the same tags never wait for each other in turn.
_REPLACE_TAGS = f"""
WITH replaced AS (
    SELECT octet_length(key) + octet_length(value) + {sizes.ENTRY_BYTES} AS bytes
    FROM tracking.tags WHERE run_id = $1 AND key = ANY($2::text[])
    ORDER BY key COLLATE "C"
    FOR UPDATE
), written AS (
    INSERT INTO tracking.tags (run_id, key, value)
    SELECT $1, k, v FROM unnest($2::text[], $3::text[]) AS t(k, v)
    WHERE (SELECT count(*) FROM replaced) >= 0
    ORDER BY k COLLATE "C"
    ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value
)
SELECT coalesce(sum(bytes), 0) FROM replaced"""


def _input_key(item: RunInput) -> tuple[str, str, str]:
    """An input's key in run_inputs (with the run's id): kind, uri and context."""
    return item.kind, item.uri, item.context


def _last_of_each_key(inputs: Sequence[RunInput]) -> list[RunInput]:
    """One input of each key, the last given, as the upsert would leave its row: the
    run's size counts each input written, and a call repeating one input 1,000 times
    (2 KB each) stores one row, not 2 MB towards the run's bound."""
    return list({_input_key(item): item for item in inputs}.values())


# What the inputs of run $1 that inputs ($2 kinds, $3 uris, $4 contexts) replace take,
# locked in the order of their keys until the caller's transaction ends.
_REPLACED_INPUTS = f"""
SELECT coalesce(sum(bytes), 0) FROM (
    SELECT octet_length(kind) + octet_length(name) + octet_length(uri) + octet_length(digest)
           + octet_length(context) + {sizes.ENTRY_BYTES} AS bytes
    FROM tracking.run_inputs
    WHERE run_id = $1
      AND (kind, uri, context) IN (SELECT * FROM unnest($2::text[], $3::text[], $4::text[]))
    ORDER BY kind COLLATE "C", uri COLLATE "C", context COLLATE "C"
    FOR UPDATE
) replaced"""
