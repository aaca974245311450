"""Experiments: create, read, rename, tag, soft delete and search."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeAlias

import asyncpg

from ...common import filter_sql, filters, paging
from ...common.errors import AlreadyExists, FailedPrecondition, NotFound
from ...common.filters import FilterError, Identifier
from ...common.sql import Params, take_turns
from ..model import Experiment, LifecycleStage, ViewType
from ..validation import counted_tag_bytes, experiment_tag_bytes, tag_bytes
from . import sizes
from .purge import delete_time, generated_location
from .runs import EXPERIMENT_CLAIMED, experiment_being_purged

_COLUMNS = """experiment_id, project, name, artifact_location, lifecycle_stage,
              creation_time, last_update_time"""
# The same, qualified: a filter's lookups join tables with columns of the same names.
_E_COLUMNS = ", ".join(f"e.{column.strip()}" for column in _COLUMNS.split(","))
_TAGS = {"tag": "tracking.experiment_tags"}
# The keys' and values' bytes in UTF-8 of the tags `t` of one experiment (TagSize.bytes).
_TAG_BYTES = "coalesce(sum(octet_length(t.key) + octet_length(t.value)), 0)"
_ENTITIES = {"tags": "tag", "tag": "tag", "attributes": "attribute", "attribute": "attribute"}


def _epoch_ms(column: str) -> str:
    """A time column in whole milliseconds since 1970 (the floor: experiments made
    within one millisecond tie, and their ids order them). Written exactly as migration
    0013 indexes it, so that the planner serves the order from that index: the epoch of
    an interval, since extract(epoch FROM timestamptz) is not immutable."""
    return (
        f"floor(extract(epoch FROM {column} - timestamptz '1970-01-01 00:00:00+00') * 1000)::bigint"
    )


# Attribute name -> (column, SQL type) for filters and ordering.
_ATTRIBUTES = {
    "name": ("e.name", "text"),
    "experiment_id": ("e.experiment_id", "bigint"),
    "creation_time": (_epoch_ms("e.creation_time"), "bigint"),
    "last_update_time": (_epoch_ms("e.last_update_time"), "bigint"),
}
# The same times, in a form no index serves, to order a filtered search by: walking the
# index in order tests the filter experiment by experiment (its tag lookups each time),
# so a filter that few experiments meet made every page walk the whole project (a tag
# filter meeting none: 81 ms sorted, 306 ms walked, 200,000 experiments); sorting what
# the filter finds costs what it finds.
_UNINDEXED_TIMES = {
    "creation_time": "floor(extract(epoch FROM e.creation_time) * 1000)::bigint",
    "last_update_time": "floor(extract(epoch FROM e.last_update_time) * 1000)::bigint",
}


class TagSize(NamedTuple):
    """What one experiment's tags take: their keys' and values' bytes in UTF-8, and
    how many there are."""

    bytes: int
    entries: int


Fitting: TypeAlias = Callable[[list[Experiment], list[TagSize]], int]


class ExperimentStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self, project: str, name: str, artifact_location: str, tags: dict[str, str]
    ) -> Experiment:
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(
                    f"""INSERT INTO tracking.experiments (project, name, artifact_location)
                        VALUES ($1, $2, $3) RETURNING {_COLUMNS}""",
                    project,
                    name,
                    artifact_location,
                )
            except asyncpg.UniqueViolationError:
                raise AlreadyExists(
                    "EXPERIMENT_ALREADY_EXISTS",
                    f"an experiment named {name!r} already exists in project {project!r} "
                    "(deleted experiments keep their names until purged)",
                    metadata={"name": name},
                ) from None
            if not artifact_location:
                location = generated_location(project, row["experiment_id"])
                row = await conn.fetchrow(
                    f"""UPDATE tracking.experiments SET artifact_location = $2
                        WHERE experiment_id = $1 RETURNING {_COLUMNS}""",
                    row["experiment_id"],
                    location,
                )
            await _write_tags(conn, row["experiment_id"], tags)
        return _experiment(row, tags)

    async def get(self, project: str, experiment_id: int) -> Experiment:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"""SELECT {_COLUMNS} FROM tracking.experiments
                    WHERE project = $1 AND experiment_id = $2""",
                project,
                experiment_id,
            )
            if row is None:
                raise _not_found(experiment_id)
            tags = await _tags(conn, [experiment_id])
            return _experiment(row, tags.get(experiment_id, {}))

    async def get_by_name(self, project: str, name: str) -> Experiment:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM tracking.experiments WHERE project = $1 AND name = $2",
                project,
                name,
            )
            if row is None:
                raise NotFound(
                    "EXPERIMENT_NOT_FOUND",
                    f"no experiment named {name!r} in project {project!r}",
                    metadata={"name": name},
                )
            tags = await _tags(conn, [row["experiment_id"]])
            return _experiment(row, tags.get(row["experiment_id"], {}))

    async def rename(self, project: str, experiment_id: int, new_name: str) -> Experiment:
        """As in MLflow, a deleted experiment keeps its name until restored or purged.
        (_lock_active sets last_update_time.)"""
        async with self._pool.acquire() as conn, conn.transaction():
            await take_turns_renaming(conn, project)
            await _lock_active(conn, project, experiment_id)
            try:
                row = await conn.fetchrow(
                    f"""UPDATE tracking.experiments SET name = $3
                        WHERE project = $1 AND experiment_id = $2 RETURNING {_COLUMNS}""",
                    project,
                    experiment_id,
                    new_name,
                )
            except asyncpg.UniqueViolationError:
                raise AlreadyExists(
                    "EXPERIMENT_ALREADY_EXISTS",
                    f"an experiment named {new_name!r} already exists in project {project!r}",
                    metadata={"name": new_name},
                ) from None
            if row is None:
                raise _not_found(experiment_id)
            tags = await _tags(conn, [experiment_id])
            return _experiment(row, tags.get(experiment_id, {}))

    async def set_lifecycle(self, project: str, experiment_id: int, stage: LifecycleStage) -> None:
        """Soft delete or restore. Runs keep their own stage; a run of a deleted
        experiment reads as deleted, so restoring the experiment brings its runs back.

        The row is locked FOR UPDATE first, which waits for the writes to its runs under
        way (each holds it FOR KEY SHARE: write_statements._CHECK_AND_CLAIM); the update
        alone would not. A delete or restore that changes nothing keeps the time of the
        last change, which searches order by."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """SELECT 1 FROM tracking.experiments
                   WHERE project = $1 AND experiment_id = $2 FOR UPDATE""",
                project,
                experiment_id,
            )
            found = await conn.fetchval(
                f"""UPDATE tracking.experiments
                    SET lifecycle_stage = $3, {delete_time("$3")},
                        last_update_time = CASE WHEN lifecycle_stage = $3
                            THEN last_update_time ELSE now() END
                    WHERE project = $1 AND experiment_id = $2
                      AND ($3 = {int(LifecycleStage.DELETED)} OR purge_time IS NULL)
                    RETURNING 1""",
                project,
                experiment_id,
                stage,
            )
            if found is None and await _being_purged(conn, project, experiment_id):
                raise experiment_being_purged(experiment_id=experiment_id)
        if found is None:
            raise _not_found(experiment_id)

    async def set_tag(self, project: str, experiment_id: int, key: str, value: str) -> None:
        """Sets one tag, refused when it would take the experiment's tags past their
        bound (validation.MAX_EXPERIMENT_TAG_BYTES)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await _lock_active(conn, project, experiment_id)  # so no other set counts alongside
            others = await conn.fetchrow(
                f"""SELECT {_TAG_BYTES} AS bytes, count(*) AS tags
                    FROM tracking.experiment_tags t
                    WHERE t.experiment_id = $1 AND t.key <> $2""",
                experiment_id,
                key,
            )
            counted = counted_tag_bytes(others["bytes"], others["tags"])
            experiment_tag_bytes(counted + tag_bytes({key: value}), "value")
            await _write_tags(conn, experiment_id, {key: value})

    async def delete_tag(self, project: str, experiment_id: int, key: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await _lock_active(conn, project, experiment_id)
            deleted = await conn.fetchval(
                """DELETE FROM tracking.experiment_tags WHERE experiment_id = $1 AND key = $2
                   RETURNING 1""",
                experiment_id,
                key,
            )
            if deleted is None:
                raise NotFound(
                    "TAG_NOT_FOUND",
                    f"experiment {experiment_id} has no tag {key!r}",
                    metadata={"key": key},
                )

    async def search(
        self,
        project: str,
        filter_text: str,
        order_by: str,
        view_type: ViewType,
        page_size: int,
        page_token: str,
        fitting: Fitting | None = None,
    ) -> paging.Page[Experiment]:
        """One page of the experiments the filter finds. A page loads the experiments
        whose tags number sizes.MAX_PAGE_LOAD_ENTRIES together (one at least), as a page
        of runs loads its runs' entries; fitting(experiments, tag_sizes) says how many of
        those (given without their tags) its answer holds: their tags are read only then,
        so a page costs at most what it sends."""
        params = Params(project)
        where = ["e.project = $1", _view_clause(view_type)]
        lookups = filter_sql.Lookups(params, _TAGS, ("experiment_id", "e.experiment_id"))
        node = filters.parse(filter_text, _ENTITIES)
        if node is not None:
            where.append(_compile(node, params, lookups))
        terms = _order(order_by, filtered=node is not None)
        keyset = paging.Keyset(
            [
                *(
                    paging.SortColumn(expr, ascending, sql_type, f"sort_key{i}")
                    for i, (expr, ascending, sql_type) in enumerate(terms)
                ),
                paging.SortColumn("e.experiment_id", True, "bigint", "experiment_id"),
            ],
            "experiments",
            project,
            filter_text,
            order_by,
            int(view_type),
        )
        where.append(keyset.bounded_condition(page_token, params))
        keys = ", ".join(f"{expr} AS sort_key{i}" for i, (expr, _, _) in enumerate(terms))
        order = ", ".join(
            f"sort_key{i} {'ASC' if up else 'DESC'}" for i, (_, up, _) in enumerate(terms)
        )
        limit = params.add(page_size + 1)
        # One snapshot: a tag set between the sizes and the tags would pass the cut.
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            rows = await conn.fetch(
                f"""SELECT {_E_COLUMNS}, {keys}
                    FROM tracking.experiments e {" ".join(lookups.joins)}
                    WHERE {" AND ".join(where)}
                    ORDER BY {order}, e.experiment_id ASC LIMIT {limit}""",
                *params.values,
            )
            kept = rows[:page_size]
            if kept:
                tag_sizes = await _tag_sizes(conn, [r["experiment_id"] for r in kept])
                kept = kept[: _loadable(tag_sizes)]
                if fitting is not None:
                    shown = [_experiment(r, {}) for r in kept]
                    kept = kept[: fitting(shown, tag_sizes[: len(kept)])]
            tags = await _tags(conn, [r["experiment_id"] for r in kept])
        experiments = [_experiment(r, tags.get(r["experiment_id"], {})) for r in kept]
        return paging.Page(experiments, keyset.next_token(rows, len(kept)))


def _view_clause(view_type: ViewType) -> str:
    if view_type == ViewType.ALL:
        return "TRUE"
    stage = LifecycleStage.DELETED if view_type == ViewType.DELETED_ONLY else LifecycleStage.ACTIVE
    return f"e.lifecycle_stage = {int(stage)}"


def _order(order_by: str, filtered: bool) -> list[tuple[str, bool, str]]:
    """The sort terms of "name", "creation_time DESC", or several of them separated by
    commas (MLflow's order_by list), each attribute at most once. A filtered search
    orders by times no index serves (_UNINDEXED_TIMES): the same values."""
    times = _UNINDEXED_TIMES if filtered else {}
    if not order_by.strip():
        return [(times.get("creation_time", _ATTRIBUTES["creation_time"][0]), False, "bigint")]
    terms: list[tuple[str, bool, str]] = []
    seen: set[str] = set()
    start = 0  # where the term begins in order_by
    for text in order_by.split(","):
        try:
            key, ascending = _order_term(text, seen)
        except FilterError as error:  # placed in the whole order, as the caller sent it
            raise FilterError(start + error.position, error.problem, error.reason) from None
        seen.add(key)
        column, sql_type = _ATTRIBUTES[key]
        terms.append((times.get(key, column), ascending, sql_type))
        start += len(text) + 1
    return terms


def _order_term(text: str, seen: set[str]) -> tuple[str, bool]:
    """The attribute and direction of one term of an order, not one of those seen."""
    if not text.strip():
        raise FilterError(len(text), "a term is empty", "INVALID_ORDER_BY")
    ident, ascending = filters.parse_order_by(text, _ENTITIES)
    if ident.entity != "attribute" or ident.key not in _ATTRIBUTES:
        raise FilterError(
            ident.position,
            "experiments order by name, experiment_id, creation_time or last_update_time",
            "INVALID_ORDER_BY",
        )
    if ident.key in seen:
        raise FilterError(ident.position, f"{ident.key} is ordered by twice", "INVALID_ORDER_BY")
    return ident.key, ascending


def _compile(node: filters.Node, params: Params, lookups: filter_sql.Lookups) -> str:
    if isinstance(node, filters.BoolOp):
        operands = (_compile(n, params, lookups) for n in node.operands)
        return "(" + f" {node.op} ".join(operands) + ")"
    if node.ident.entity == "tag":
        return lookups.condition(node, "text")
    if isinstance(node, filters.NullCheck):
        raise FilterError(node.ident.position, "IS NULL applies to tags only")
    column, sql_type = _attribute(node.ident)
    return filter_sql.condition(column, node, params, sql_type)


def _attribute(ident: Identifier) -> tuple[str, str]:
    if ident.key not in _ATTRIBUTES:
        known = ", ".join(_ATTRIBUTES)
        raise FilterError(
            ident.position, f"unknown experiment attribute {ident.key!r}; use {known}"
        )
    return _ATTRIBUTES[ident.key]


async def take_turns_renaming(conn: asyncpg.Connection, project: str) -> None:
    """Makes the renames of project's experiments run one after another, so that each
    sees the names the one before left. Two renames taking each other's name at once
    each updated its own row, then waited for the other's to give its name up, and
    PostgreSQL aborted one of them as a deadlock: ABORTED, "call again", where either
    order of the two answers ALREADY_EXISTS. Taken before the row's lock, so that a
    rename holds no lock while it waits for its turn."""
    await take_turns(conn, "tracking.experiments/names", project)


async def _lock_active(conn: asyncpg.Connection, project: str, experiment_id: int) -> None:
    """Raises unless the experiment is active; holds it so. NO KEY UPDATE, which the
    key-share lock of each write to its runs does not hold up (FOR UPDATE made every tag
    set wait for the writes under way, and the writes begun after wait for it); a
    rename's update of the name, a key, waits for them all the same."""
    row = await conn.fetchrow(
        f"""SELECT e.lifecycle_stage, {EXPERIMENT_CLAIMED} FROM tracking.experiments e
           WHERE e.project = $1 AND e.experiment_id = $2 FOR NO KEY UPDATE""",
        project,
        experiment_id,
    )
    if row is None:
        raise _not_found(experiment_id)
    if row["lifecycle_stage"] != LifecycleStage.ACTIVE:
        if row["experiment_claimed"]:
            raise experiment_being_purged(experiment_id=experiment_id)
        raise FailedPrecondition(
            "EXPERIMENT_DELETED", f"experiment {experiment_id} is deleted; restore it first"
        )
    await conn.execute(
        "UPDATE tracking.experiments SET last_update_time = now() WHERE experiment_id = $1",
        experiment_id,
    )


async def _write_tags(conn: asyncpg.Connection, experiment_id: int, tags: dict[str, str]) -> None:
    if tags:
        await conn.execute(
            """INSERT INTO tracking.experiment_tags (experiment_id, key, value)
               SELECT $1, k, v FROM unnest($2::text[], $3::text[]) AS t(k, v)
               ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value""",
            experiment_id,
            list(tags),
            list(tags.values()),
        )


async def _tag_sizes(conn: asyncpg.Connection, ids: list[int]) -> list[TagSize]:
    """What each experiment's tags take: their keys' and values' bytes, and how many
    there are."""
    rows = await conn.fetch(
        f"""SELECT t.experiment_id, {_TAG_BYTES} AS bytes, count(*) AS tags
            FROM tracking.experiment_tags t WHERE t.experiment_id = ANY($1::bigint[])
            GROUP BY t.experiment_id""",
        ids,
    )
    found = {r["experiment_id"]: TagSize(r["bytes"], r["tags"]) for r in rows}
    return [found.get(i, TagSize(0, 0)) for i in ids]


def _loadable(tag_sizes: list[TagSize]) -> int:
    """How many experiments, from the first, hold sizes.MAX_PAGE_LOAD_ENTRIES tags
    together; one at least. A tag costs about what a run's entry does to read and
    answer, whatever its length: a page of 61 experiments of 10,000 one-word tags each
    (5 MB, cut by bytes alone) took 3 s and 180 MB to answer."""
    held = itertools.accumulate(size.entries for size in tag_sizes)
    within = sum(1 for total in held if total <= sizes.MAX_PAGE_LOAD_ENTRIES)
    return max(within, 1)


async def _tags(conn: asyncpg.Connection, ids: Sequence[int]) -> dict[int, dict[str, str]]:
    # An array of keys and one of values an experiment, decoded in C, rather than a row
    # a tag, which the event loop decodes and sorts into dicts one by one: 200,000 tags
    # of 20 experiments took 130-160 ms so, against 340-410 ms as rows.
    rows = await conn.fetch(
        """SELECT experiment_id, array_agg(key ORDER BY key) AS keys,
                  array_agg(value ORDER BY key) AS values
           FROM tracking.experiment_tags WHERE experiment_id = ANY($1::bigint[])
           GROUP BY experiment_id""",
        list(ids),
    )
    return {
        row["experiment_id"]: dict(zip(row["keys"], row["values"], strict=True)) for row in rows
    }


def _experiment(row: asyncpg.Record, tags: dict[str, str]) -> Experiment:
    return Experiment(
        project=row["project"],
        experiment_id=str(row["experiment_id"]),
        name=row["name"],
        artifact_location=row["artifact_location"],
        lifecycle_stage=LifecycleStage(row["lifecycle_stage"]),
        creation_time=row["creation_time"],
        last_update_time=row["last_update_time"],
        tags=dict(tags),
    )


def _not_found(experiment_id: int) -> NotFound:
    return NotFound(
        "EXPERIMENT_NOT_FOUND",
        f"experiment {experiment_id} not found",
        metadata={"experiment_id": str(experiment_id)},
    )


async def _being_purged(conn: asyncpg.Connection, project: str, experiment_id: int) -> bool:
    purge_time = await conn.fetchval(
        """SELECT purge_time FROM tracking.experiments
           WHERE project = $1 AND experiment_id = $2""",
        project,
        experiment_id,
    )
    return purge_time is not None
