"""Model versions: numbered per model, staged, aliased, tagged, listed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from ...common import filters, paging
from ...common.errors import NotFound, invalid_field
from ...common.sql import Params
from ..model import ModelVersion, Stage, State
from ..validation import own_files, uri
from .common import (
    clash,
    clashing_value,
    decode_properties,
    encode_properties,
    fetch_one,
    id_or_none,
    not_found,
    take_turn_for_external_id,
    update_row,
    updating,
    write_tag,
)
from .listing import FILTER_ENTITIES, STATE_NUMBERS, Listing, Named

COLUMNS = """v.id, v.project, v.registered_model_id, v.name, v.version, v.author, v.description,
    v.state, v.stage, v.source_run_id, v.source_uri, v.external_id, v.custom_properties, v.tags,
    v.text_bytes, v.entries, v.create_time, v.update_time,
    (SELECT m.name FROM registry.registered_models m WHERE m.id = v.registered_model_id)
        AS model_name,
    ARRAY(SELECT a.alias FROM registry.aliases a WHERE a.model_version_id = v.id
          ORDER BY a.alias) AS aliases"""
# What a version `q` of a page brings beside itself: its aliases (bytes and entries).
_BRINGS = """SELECT coalesce(sum(octet_length(a.alias)), 0) AS bytes, count(*) AS entries
    FROM registry.aliases a WHERE a.model_version_id = q.id"""
# Lists join each version's model `m`: a filter on its name finds the model by the
# (project, name) index, then its versions; an order by it walks the models by name.
# A subquery per version read and sorted every version of the project.
_MODEL_NAME = "m.name"
_LISTED = f"""SELECT {COLUMNS} FROM registry.model_versions v
    JOIN registry.registered_models m ON m.id = v.registered_model_id AND m.project = v.project"""
# A version's stage and state as filters name them (`stage = 'Production'`).
_STAGE = Named("v.stage", {"None": 0, "Staging": 1, "Production": 2, "Archived": 3})
_STATE = Named("v.state", STATE_NUMBERS)
_LISTING = Listing(
    "v",
    {
        # MLflow's meaning: the registered model's name; the version's own is version_name.
        "name": (_MODEL_NAME, "text"),
        "model_name": (_MODEL_NAME, "text"),
        "version_name": ("v.name", "text"),
        "version": ("v.version", "bigint"),
        "version_number": ("v.version", "bigint"),
        "run_id": ("v.source_run_id", "text"),
        "source_run_id": ("v.source_run_id", "text"),
        "source_uri": ("v.source_uri", "text"),
        "source_path": ("v.source_uri", "text"),
        "author": ("v.author", "text"),
        "description": ("v.description", "text"),
        "external_id": ("v.external_id", "text"),
        "registered_model_id": ("v.registered_model_id", "bigint"),
        "state": (_STATE.text, "text"),
        "stage": (_STAGE.text, "text"),
        "current_stage": (_STAGE.text, "text"),
        "id": ("v.id", "bigint"),
    },
    # MLflow's "name": the registered model's, which COLUMNS reads as model_name.
    orders={"version": "bigint", "name": (_MODEL_NAME, "text", "model_name")},
    # As MLflow's search_model_versions orders them: a model's versions newest first.
    ties={"name": (paging.SortColumn("v.version", False, "bigint", "version"),)},
    empty_is_unset=("v.source_run_id", "v.source_uri", "v.author", "v.description"),
    named=(_STAGE, _STATE),
    quoted_numbers=("v.version",),
    run_ids=("v.source_run_id",),
)
# A stored URI with its spaces and controls dropped: URL parsers skip those before a URI
# and drop tabs and line breaks within it, so " file:m" is a file: URI to them (one
# stored before the registry refused such URIs). Dropping the spaces within it too only
# makes "fi le:m" pass for one, which is no URI a client could use either.
_AS_PARSED = "regexp_replace({}, '[\\x01-\\x20\\x7f]', '', 'g')"
# Every stage, as an SQL array, for lookups that take each in turn.
STAGES = "'{" + ",".join(str(int(s)) for s in Stage) + "}'::smallint[]"


def highest_in_stage(columns: str, model: str, stage: str) -> str:
    """SQL of `columns` (over `x`) of the highest version of model in stage (none: no row): the
    first entry of model_versions_by_stage at (model, stage). The stage is bounded
    rather than equated, and ordered by: with `stage = s` the planner may instead read
    the model's versions by number from the highest down until one is in the stage,
    which for a stage no version is in reads them all (750,000 rows a stage for a
    model of 1,000,000 versions in stage None, when few versions anywhere are staged)."""
    return f"""SELECT {columns} FROM registry.model_versions x
        WHERE x.registered_model_id = {model} AND x.stage >= {stage} AND x.stage <= {stage}
        ORDER BY x.stage, x.version DESC LIMIT 1"""


# The highest version of each model ($1) in each stage ($2), by model and stage: one
# probe of model_versions_by_stage per pair, whatever the model's version count, and
# COLUMNS (two subqueries a row) on the found rows only. DISTINCT ON over the versions
# read, sorted and evaluated COLUMNS on all of them: 3 s and 63 MiB of temporary files
# for a model of 1,000,000 versions.
_LATEST = f"""SELECT {COLUMNS} FROM registry.model_versions v
    WHERE v.id IN (SELECT top.id FROM unnest($1::bigint[]) AS model (id)
                   CROSS JOIN unnest($2::smallint[]) AS wanted (stage)
                   CROSS JOIN LATERAL ({highest_in_stage("x.id", "model.id", "wanted.stage")}) top)
    ORDER BY v.registered_model_id, v.stage"""
# Orders an index of one model's versions serves, (registered_model_id, version), (...,
# id) or (..., update_time, id): MLflow's "name" orders them by version (see _LISTING's
# ties), and its search_model_versions by update time unless told otherwise.
_BY_MODEL_INDEX = ("name", "version", "id", "update_time")
# The filter's fields that name a version's registered model.
_MODEL_NAME_FIELDS = ("name", "model_name")
# Spare default names _free_name asks about at once.
_NAMES_PER_LOOKUP = 16
UPDATABLE = (
    "author",
    "description",
    "state",
    "source_run_id",
    "source_uri",
    "external_id",
    "custom_properties",
)


class VersionStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, version: ModelVersion) -> ModelVersion:
        """Takes the model's next number under its row lock: numbers are gapless and
        never reused, and concurrent creations queue on the lock. An unnamed version
        is named by its number, or by _free_name when a version has that name."""
        async with self._pool.acquire() as conn, conn.transaction():
            number = await conn.fetchval(
                """UPDATE registry.registered_models
                   SET next_version = next_version + 1, update_time = clock_timestamp()
                   WHERE project = $1 AND id = $2 RETURNING next_version - 1""",
                version.project,
                id_or_none(version.registered_model_id),
            )
            if number is None:
                raise not_found(
                    "REGISTERED_MODEL_NOT_FOUND", "registered model", version.registered_model_id
                )
            model_id = int(version.registered_model_id)
            name = version.name or str(number)
            try:
                row = await _insert(conn, version, model_id, name, number, default=not version.name)
                if row is None:  # a version was named like this number on purpose
                    name = await _free_name(conn, model_id, number)
                    row = await _insert(conn, version, model_id, name, number, default=False)
            except asyncpg.UniqueViolationError as error:
                raise clash(error, clashing_value(error, name, version.external_id)) from None
            return (await with_aliases(conn, [row]))[0]

    async def get(self, project: str, version_id: str) -> ModelVersion:
        return await self._one(project, "v.id = $2", [id_or_none(version_id)], version_id)

    async def find(
        self,
        project: str,
        model_id: str,
        *,
        name: str = "",
        number: int = 0,
        alias: str = "",
        external_id: str = "",
    ) -> ModelVersion:
        if external_id:
            return await self._one(project, "v.external_id = $2", [external_id], external_id)
        model = id_or_none(model_id)
        if name:
            return await self._one(
                project, "v.registered_model_id = $2 AND v.name = $3", [model, name], name
            )
        if alias:
            return await self._one(
                project,
                """v.id = (SELECT a.model_version_id FROM registry.aliases a
                           WHERE a.registered_model_id = $2 AND a.alias = $3)""",
                [model, alias],
                f"with alias {alias!r}",
            )
        return await self._one(
            project, "v.registered_model_id = $2 AND v.version = $3", [model, number], str(number)
        )

    async def list_page(
        self,
        project: str,
        model_id: str,
        filter_text: str,
        order_by: str,
        page_size: int,
        page_token: str,
    ) -> paging.ListPage[ModelVersion]:
        params = Params(project)
        where = ["v.project = $1", "m.project = $1", _LISTING.where(filter_text, params)]
        named = _named_models(filter_text)
        one_model = bool(model_id) or (named is not None and len(set(named)) == 1)
        query = _LISTED
        if model_id:
            where.append(f"v.registered_model_id = {params.add(id_or_none(model_id) or -1)}")
        elif one_model and named and _LISTING.field(order_by) in _BY_MODEL_INDEX:
            where.append(f"v.registered_model_id = ({_model_named(named[0], params)})")
        elif named is not None:
            query = _listed_of(named, params)
        async with self._pool.acquire() as conn:
            page = await _LISTING.page(
                conn,
                query,
                where,
                params,
                order_by,
                page_size,
                page_token,
                ["versions", project, model_id, filter_text],
                brings=_BRINGS,
                one_valued=("name",) if one_model else (),
            )
            return page.of(await with_aliases(conn, page.items))

    async def update(
        self, project: str, version_id: str, changes: Mapping[str, Any]
    ) -> ModelVersion:
        async def update(conn: asyncpg.Connection, surely: bool) -> ModelVersion:
            row_id = id_or_none(version_id)
            await take_turn_for_external_id(
                conn, "model_versions", project, row_id, changes, surely
            )
            current = await self._one(project, "v.id = $2", [row_id], version_id, conn, lock=True)
            if "name" in changes and changes["name"] != current.name:
                raise invalid_field(
                    "model_version.name", f"is {current.name!r}; version names cannot change"
                )
            moved_to = changes.get("registered_model_id", current.registered_model_id)
            if moved_to != current.registered_model_id:
                raise invalid_field(
                    "model_version.registered_model_id",
                    f"is {current.registered_model_id!r}: a version keeps its model",
                )
            # Checked when changed, not when sent back as stored (Kubeflow's upserts send
            # every field): a URI stored before the checks came in keeps working.
            if changes.get("source_uri", current.source_uri) != current.source_uri:
                uri(changes["source_uri"], "model_version.source_uri")
                own_files(changes["source_uri"], project, "model_version.source_uri")
            await update_row(
                conn,
                "model_versions",
                project,
                int(version_id),
                changes,
                UPDATABLE,
                current.external_id,
                current.tags,
            )
            return await self._one(project, "v.id = $2", [int(version_id)], version_id, conn)

        return await updating(self._pool, update)

    async def delete(self, project: str, version_id: str) -> None:
        """Deletes the version with its artifacts and aliases; its number is not reused.
        The model's update time moves, as in MLflow; the model is written first, as
        creating a version and deleting the model take it before its versions."""
        async with self._pool.acquire() as conn, conn.transaction():
            await _touch_model(conn, project, version_id)
            deleted = await conn.fetchval(
                """DELETE FROM registry.model_versions WHERE project = $1 AND id = $2
                   RETURNING id""",
                project,
                id_or_none(version_id),
            )
            if deleted is None:
                raise _missing(version_id)

    async def delete_numbered(self, project: str, model_name: str, number: int) -> None:
        """`delete` of the version numbered so of the model named so (MLflow's way): the
        model is matched by name as it is written, so that one renamed or deleted
        meanwhile leaves nothing of the name (NOT_FOUND), as in some order of the calls."""
        async with self._pool.acquire() as conn, conn.transaction():
            model = await conn.fetchval(
                """UPDATE registry.registered_models SET update_time = clock_timestamp()
                   WHERE project = $1 AND name = $2 RETURNING id""",
                project,
                model_name,
            )
            if model is None:
                raise not_found("REGISTERED_MODEL_NOT_FOUND", "registered model", model_name)
            deleted = await conn.fetchval(
                """DELETE FROM registry.model_versions
                   WHERE project = $1 AND registered_model_id = $2 AND version = $3
                   RETURNING id""",
                project,
                model,
                number,
            )
            if deleted is None:
                raise _missing(str(number))

    async def transition_stage(
        self, project: str, version_id: str, stage: Stage, archive_existing: bool
    ) -> ModelVersion:
        async with self._pool.acquire() as conn, conn.transaction():
            # The model first, as creating a version takes it: one model's transitions
            # follow one another, so each archives what the one before left in its stage.
            # Its update time moves too, as in MLflow: a promotion shows in the models
            # ordered by it.
            await _touch_model(conn, project, version_id)
            current = await self._one(
                project, "v.id = $2", [id_or_none(version_id)], version_id, conn, lock=True
            )
            if archive_existing and stage in (Stage.STAGING, Stage.PRODUCTION):
                await conn.execute(
                    """UPDATE registry.model_versions
                       SET stage = $3, update_time = clock_timestamp()
                       WHERE registered_model_id = $1 AND stage = $2 AND id <> $4""",
                    int(current.registered_model_id),
                    stage,
                    Stage.ARCHIVED,
                    int(version_id),
                )
            await update_row(
                conn, "model_versions", project, int(version_id), {"stage": stage}, ("stage",), ""
            )
            return await self._one(project, "v.id = $2", [int(version_id)], version_id, conn)

    async def latest(
        self, project: str, model_id: str, stages: Sequence[Stage]
    ) -> list[ModelVersion]:
        """The highest version in each requested stage (every stage when none)."""
        async with self._pool.acquire() as conn:
            exists = await conn.fetchval(
                "SELECT 1 FROM registry.registered_models WHERE project = $1 AND id = $2",
                project,
                id_or_none(model_id),
            )
            if exists is None:
                raise not_found("REGISTERED_MODEL_NOT_FOUND", "registered model", model_id)
            rows = await conn.fetch(
                _LATEST, [int(model_id)], sorted({int(s) for s in stages or Stage})
            )
            return await with_aliases(conn, rows)

    async def set_tag(self, project: str, version_id: str, key: str, value: str | None) -> None:
        if not await write_tag(self._pool, "model_versions", project, version_id, key, value):
            raise _missing(version_id)

    async def download_uri(self, project: str, version_id: str) -> str:
        """The first model artifact's URI, else the version's source URI. `file:` URIs
        stored before they were refused name a server's local path, useless to a client:
        they are passed over, spelled as URL parsers read them (`_AS_PARSED`)."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"""SELECT CASE WHEN {_AS_PARSED.format("v.source_uri")} ILIKE 'file:%'
                             THEN '' ELSE v.source_uri END AS source_uri,
                      (SELECT a.uri FROM registry.artifacts a
                        WHERE a.model_version_id = v.id AND a.kind = 1 AND a.uri <> ''
                          AND {_AS_PARSED.format("a.uri")} NOT ILIKE 'file:%'
                        ORDER BY a.id LIMIT 1) AS artifact_uri
                   FROM registry.model_versions v WHERE v.project = $1 AND v.id = $2""",
                project,
                id_or_none(version_id),
            )
        if row is None:
            raise _missing(version_id)
        return str(row["artifact_uri"] or row["source_uri"])

    async def _one(
        self,
        project: str,
        condition: str,
        values: list[Any],
        shown: str,
        conn: asyncpg.Connection | None = None,
        lock: bool = False,
    ) -> ModelVersion:
        if conn is None:
            async with self._pool.acquire() as own:
                return await self._one(project, condition, values, shown, own, lock)
        row = await fetch_one(
            conn, "model_versions", "v", COLUMNS, condition, [project, *values], lock
        )
        if row is None:
            raise _missing(shown)
        return (await with_aliases(conn, [row]))[0]


async def _touch_model(conn: asyncpg.Connection, project: str, version_id: str) -> None:
    """Sets the update time of the version's model, which holds its row lock until the
    transaction ends (none when there is no such version)."""
    await conn.execute(
        """UPDATE registry.registered_models m SET update_time = clock_timestamp()
           WHERE m.id = (SELECT v.registered_model_id FROM registry.model_versions v
                         WHERE v.project = $1 AND v.id = $2)""",
        project,
        id_or_none(version_id),
    )


async def _insert(
    conn: asyncpg.Connection,
    version: ModelVersion,
    model_id: int,
    name: str,
    number: int,
    *,
    default: bool,
) -> asyncpg.Record | None:
    """Inserts the version as name; a default name that another version has already
    inserts nothing (None) instead of failing the transaction."""
    free_only = "ON CONFLICT ON CONSTRAINT model_versions_registered_model_id_name_key DO NOTHING"
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""INSERT INTO registry.model_versions AS v (project, registered_model_id, name,
                version, author, description, state, stage, source_run_id, source_uri,
                external_id, custom_properties, tags)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
            {free_only if default else ""} RETURNING {COLUMNS}""",
        version.project,
        model_id,
        name,
        number,
        version.author,
        version.description,
        version.state,
        version.stage,
        version.source_run_id,
        version.source_uri,
        version.external_id or None,
        encode_properties(version.custom_properties),
        version.tags,
    )
    return row


async def _free_name(conn: asyncpg.Connection, model_id: int, number: int) -> str:
    """The name of an unnamed version whose number another version has as its name:
    "<number>-2", else "<number>-3" ..., the first the model's versions leave free.
    The caller holds the model's row lock, which every creation of a version takes, so
    the name stays free until it is inserted; each batch looked past is one taken by a
    version, so the search ends."""
    start = 2
    while True:
        candidates = [f"{number}-{k}" for k in range(start, start + _NAMES_PER_LOOKUP)]
        taken = {
            row["name"]
            for row in await conn.fetch(
                """SELECT name FROM registry.model_versions
                   WHERE registered_model_id = $1 AND name = ANY($2::text[])""",
                model_id,
                candidates,
            )
        }
        free = [name for name in candidates if name not in taken]
        if free:
            return free[0]
        start += _NAMES_PER_LOOKUP


async def with_aliases(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> list[ModelVersion]:
    """Versions of the rows; COLUMNS already carries their aliases and model names."""
    return [_version(row) for row in rows]


async def latest_of(
    conn: asyncpg.Connection, model_ids: list[int]
) -> dict[int, list[ModelVersion]]:
    """MLflow's latest_versions of several models in one statement: the highest version
    in each stage, by model id, in stage order."""
    latest: dict[int, list[ModelVersion]] = {model_id: [] for model_id in model_ids}
    if model_ids:
        for row in await conn.fetch(_LATEST, model_ids, [int(s) for s in Stage]):
            latest[row["registered_model_id"]].append(_version(row))
    return latest


def _named_models(filter_text: str) -> list[str] | None:
    """The model names a filter requires of every version it keeps (MLflow's
    `name = 'm'`, or `name IN (...)`, ANDed with anything), or None."""
    node = filters.parse(filter_text, FILTER_ENTITIES)
    terms = node.operands if isinstance(node, filters.BoolOp) and node.op == "AND" else [node]
    for term in terms:
        if (
            isinstance(term, filters.Comparison)
            and term.ident.entity == "attribute"
            and term.ident.key in _MODEL_NAME_FIELDS
            and term.op in ("=", "IN")
            and not term.negated
        ):
            values = term.value if isinstance(term.value, tuple) else (term.value,)
            return [str(value) for value in values]
    return None


def _model_named(name: str, params: Params) -> str:
    """SQL of the id of the project's ($1) model named so (NULL when none): one value,
    so the planner reads the model's versions by an index of them in the page's order
    (the fence of _listed_of read and sorted all of them, 20,000 rows for a page of 5)."""
    return f"""SELECT n.id FROM registry.registered_models n
        WHERE n.project = $1 AND n.name = {params.add(name)}"""


def _listed_of(names: list[str], params: Params) -> str:
    """_LISTED over the versions of the named models only, read by model: a version of
    another model never passes the filter. The fence (OFFSET 0) keeps the planner from
    walking every version of the project in the page's order instead, hoping to meet
    the few it keeps early (it read 22,000 rows for a page of 5); each version's model
    is looked up from the version (a lateral lookup, fenced too), which keeps it from
    reading the versions again for each model named (the versions of n models, n
    times, in a nested loop over them)."""
    models = f"""ARRAY(SELECT n.id FROM registry.registered_models n
                      WHERE n.project = $1 AND n.name = ANY({params.add(names, "text[]")}))"""
    return f"""SELECT {COLUMNS} FROM (
            SELECT * FROM registry.model_versions WHERE registered_model_id = ANY({models})
            OFFSET 0) v
        CROSS JOIN LATERAL (
            SELECT * FROM registry.registered_models n
            WHERE n.id = v.registered_model_id AND n.project = v.project OFFSET 0) m"""


def _missing(shown: str) -> NotFound:
    return not_found("MODEL_VERSION_NOT_FOUND", "model version", shown)


def _version(row: asyncpg.Record) -> ModelVersion:
    return ModelVersion(
        project=row["project"],
        id=str(row["id"]),
        registered_model_id=str(row["registered_model_id"]),
        name=row["name"],
        version=row["version"],
        author=row["author"],
        description=row["description"],
        state=State(row["state"]),
        stage=Stage(row["stage"]),
        source_run_id=row["source_run_id"],
        source_uri=row["source_uri"],
        external_id=row["external_id"] or "",
        custom_properties=decode_properties(row["custom_properties"]),
        tags=dict(row["tags"]),
        aliases=list(row["aliases"]),
        registered_model_name=row["model_name"],
        create_time=row["create_time"],
        update_time=row["update_time"],
    )
