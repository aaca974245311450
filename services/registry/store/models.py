"""Registered models: create, read, update, rename, delete, tags, aliases, lists."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from ...common import paging
from ...common.errors import InvalidArgument, NotFound, invalid_field
from ...common.sql import Params, take_turns
from ..model import RegisteredModel, State
from ..validation import MAX_ALIASES
from .common import (
    clash,
    clashing_value,
    decode_properties,
    delete_row,
    encode_properties,
    fetch_one,
    id_or_none,
    not_found,
    row_key,
    take_turn_for_external_id,
    update_row,
    updating,
    write_tag,
)
from .listing import STATE_NUMBERS, Listing, Named
from .version_stages import STAGES, highest_in_stage, latest_of

COLUMNS = """m.id, m.project, m.name, m.description, m.owner, m.state, m.external_id,
    m.custom_properties, m.tags, m.text_bytes, m.entries, m.create_time, m.update_time,
    (SELECT coalesce(jsonb_object_agg(a.alias, v.version ORDER BY a.alias), '{}'::jsonb)
       FROM registry.aliases a JOIN registry.model_versions v ON v.id = a.model_version_id
      WHERE a.registered_model_id = m.id) AS aliases"""
_STATE = Named("m.state", STATE_NUMBERS)
_LISTING = Listing(
    "m",
    {
        "name": ("m.name", "text"),
        "owner": ("m.owner", "text"),
        "description": ("m.description", "text"),
        "external_id": ("m.external_id", "text"),
        "state": (_STATE.text, "text"),
        "id": ("m.id", "bigint"),
    },
    orders={"name": "text"},
    empty_is_unset=("m.owner", "m.description"),
    named=(_STATE,),
    quoted_numbers=("m.id",),
)
# Fields an update may change; name only through rename.
UPDATABLE = ("description", "owner", "state", "external_id", "custom_properties")


# What a model `q` of a page brings beside itself: its latest version of each stage
# (with_aliases reads them), as latest_of finds them, and its aliases, which come twice
# (the model's, and each latest version's own): bytes and entries. One probe of
# model_versions_by_stage per stage, as latest_of looks them up.
_LATEST = highest_in_stage("x.text_bytes, x.entries", "q.id", "wanted.stage")
_ALIASES = "FROM registry.aliases a WHERE a.registered_model_id = q.id"
# An aggregate without GROUP BY: one row, for a model without versions too.
_BRINGS = f"""SELECT
        coalesce(sum(top.text_bytes), 0)
            + 2 * (SELECT coalesce(sum(octet_length(a.alias)), 0) {_ALIASES}) AS bytes,
        coalesce(sum(top.entries), 0) + 2 * (SELECT count(*) {_ALIASES}) AS entries
    FROM unnest({STAGES}) AS wanted (stage) CROSS JOIN LATERAL ({_LATEST}) top"""


class ModelStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, model: RegisteredModel) -> RegisteredModel:
        async with self._pool.acquire() as conn:
            try:
                row = await conn.fetchrow(
                    f"""INSERT INTO registry.registered_models AS m (project, name, description,
                            owner, state, external_id, custom_properties, tags)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}""",
                    model.project,
                    model.name,
                    model.description,
                    model.owner,
                    model.state,
                    model.external_id or None,
                    encode_properties(model.custom_properties),
                    model.tags,
                )
            except asyncpg.UniqueViolationError as error:
                raise clash(error, clashing_value(error, model.name, model.external_id)) from None
            return (await with_aliases(conn, [row]))[0]

    async def get(self, project: str, model_id: str) -> RegisteredModel:
        return await self._one(project, "m.id = $2", id_or_none(model_id), model_id)

    async def find(self, project: str, *, name: str = "", external_id: str = "") -> RegisteredModel:
        if name:
            return await self._one(project, "m.name = $2", name, name)
        return await self._one(project, "m.external_id = $2", external_id, external_id)

    async def list_page(
        self, project: str, filter_text: str, order_by: str, page_size: int, page_token: str
    ) -> paging.ListPage[RegisteredModel]:
        params = Params(project)
        where = ["m.project = $1", _LISTING.where(filter_text, params)]
        async with self._pool.acquire() as conn:
            page = await _LISTING.page(
                conn,
                f"SELECT {COLUMNS} FROM registry.registered_models m",
                where,
                params,
                order_by,
                page_size,
                page_token,
                ["models", project, filter_text],
                brings=_BRINGS,
            )
            return page.of(await with_aliases(conn, page.items))

    async def update(
        self, project: str, model_id: str, changes: Mapping[str, Any]
    ) -> RegisteredModel:
        """Sets the given fields (a subset of UPDATABLE, plus an unchanged name)."""

        async def update(conn: asyncpg.Connection, surely: bool) -> RegisteredModel:
            row_id = id_or_none(model_id)
            await take_turn_for_external_id(
                conn, "registered_models", project, row_id, changes, surely
            )
            current = await self._one(project, "m.id = $2", row_id, model_id, conn, lock=True)
            if "name" in changes and changes["name"] != current.name:
                raise invalid_field(
                    "registered_model.name",
                    f"is {current.name!r}; names change only through RenameRegisteredModel",
                )
            await update_row(
                conn,
                "registered_models",
                project,
                int(model_id),
                changes,
                UPDATABLE,
                current.external_id,
                current.tags,
            )
            return await self._one(project, "m.id = $2", int(model_id), model_id, conn)

        return await updating(self._pool, update)

    async def rename(
        self, project: str, model_id: str, new_name: str, *, name: str = ""
    ) -> RegisteredModel:
        """Renames the model with model_id, or the one named name when given (MLflow's
        way): the name is matched by the UPDATE itself, after the renames before it,
        so that a rename or a delete of that model meanwhile leaves nothing of the name
        (NOT_FOUND), as in some order of the calls."""
        key, value = row_key(model_id, name)
        async with self._pool.acquire() as conn, conn.transaction():
            await take_turns_renaming(conn, project)
            try:
                found = await conn.fetchval(
                    f"""UPDATE registry.registered_models
                        SET name = $3, update_time = clock_timestamp()
                        WHERE project = $1 AND {key} = $2 RETURNING id""",
                    project,
                    value,
                    new_name,
                )
            except asyncpg.UniqueViolationError as error:
                raise clash(error, new_name) from None
            if found is None:
                raise _missing(name or model_id)
            return await self._one(project, "m.id = $2", found, model_id, conn)

    async def delete(self, project: str, model_id: str, *, name: str = "") -> None:
        """Deletes the model with its versions, their artifacts, tags and aliases: the
        one with model_id, or the one named name when given, matched by the DELETE
        itself (see `rename`)."""
        if not await delete_row(self._pool, "registered_models", project, model_id, name=name):
            raise _missing(name or model_id)

    async def set_tag(self, project: str, model_id: str, key: str, value: str | None) -> None:
        """Sets a tag, or deletes it when value is None."""
        if not await write_tag(self._pool, "registered_models", project, model_id, key, value):
            raise _missing(model_id)

    async def set_alias(self, project: str, model_id: str, alias: str, version: int) -> None:
        """Points alias at a version; an alias on another version moves in the same
        statement. A model has at most MAX_ALIASES."""
        async with self._pool.acquire() as conn, conn.transaction():
            # The model first, as its delete takes it before its versions: an alias is
            # set against neither a model nor a version being deleted, and the count of
            # the model's aliases holds until commit.
            found = await conn.fetchrow(
                """SELECT id, name FROM registry.registered_models WHERE project = $1 AND id = $2
                   FOR NO KEY UPDATE""",
                project,
                id_or_none(model_id),
            )
            if found is None:
                raise _missing(model_id)
            model = found["id"]
            version_id = await conn.fetchval(
                """SELECT id FROM registry.model_versions
                   WHERE registered_model_id = $1 AND version = $2 FOR KEY SHARE""",
                model,
                version,
            )
            if version_id is None:  # named as the caller knows it, not by its row id
                raise NotFound(
                    "MODEL_VERSION_NOT_FOUND",
                    f"registered model {found['name']!r} has no version {version}",
                    metadata={"version": str(version)},
                )
            await _check_alias_room(conn, model, alias)
            await conn.execute(
                """INSERT INTO registry.aliases (registered_model_id, alias, model_version_id)
                   VALUES ($1, $2, $3) ON CONFLICT (registered_model_id, alias)
                   DO UPDATE SET model_version_id = excluded.model_version_id""",
                model,
                alias,
                version_id,
            )

    async def delete_alias(self, project: str, model_id: str, alias: str) -> None:
        """Deletes the alias if the model has it: as in MLflow, and as deleting a tag,
        deleting one it lacks does nothing. The model must exist."""
        async with self._pool.acquire() as conn:
            found = await conn.fetchval(
                """WITH model AS (SELECT id FROM registry.registered_models
                                  WHERE project = $1 AND id = $2),
                        deleted AS (DELETE FROM registry.aliases a USING model
                                    WHERE a.registered_model_id = model.id AND a.alias = $3)
                   SELECT id FROM model""",
                project,
                id_or_none(model_id),
                alias,
            )
        if found is None:
            raise _missing(model_id)

    async def _one(
        self,
        project: str,
        condition: str,
        value: object,
        shown: str,
        conn: asyncpg.Connection | None = None,
        lock: bool = False,
    ) -> RegisteredModel:
        if conn is None:
            async with self._pool.acquire() as own:
                return await self._one(project, condition, value, shown, own, lock)
        row = await fetch_one(
            conn, "registered_models", "m", COLUMNS, condition, [project, value], lock
        )
        if row is None:
            raise _missing(shown)
        return (await with_aliases(conn, [row]))[0]


async def take_turns_renaming(conn: asyncpg.Connection, project: str) -> None:
    """Makes the renames of project's models run one after another, so that each sees
    the names the one before left. Two renames taking each other's name at once could
    each update its own row, then wait for the other's to give its name up, and
    PostgreSQL would abort one of them as a deadlock: ABORTED, "call again", where
    either order of the two answers ALREADY_EXISTS."""
    await take_turns(conn, "registry.registered_models/names", project)


async def with_aliases(
    conn: asyncpg.Connection, rows: list[asyncpg.Record]
) -> list[RegisteredModel]:
    """Models of the rows (COLUMNS carries their aliases) with MLflow's latest_versions:
    one statement for the whole page."""
    models = [_model(row) for row in rows]
    latest = await latest_of(conn, [int(m.id) for m in models])
    for model in models:
        model.latest_versions = latest[int(model.id)]
    return models


async def _check_alias_room(conn: asyncpg.Connection, model_id: int, alias: str) -> None:
    """Refuses a new alias of a model that has MAX_ALIASES (moving one is never refused)."""
    held, exists = await conn.fetchrow(
        """SELECT count(*), bool_or(alias = $2) FROM registry.aliases
           WHERE registered_model_id = $1""",
        model_id,
        alias,
    )
    if held >= MAX_ALIASES and not exists:
        raise InvalidArgument(
            "TOO_MANY_ALIASES",
            f"a registered model may have {MAX_ALIASES} aliases: delete one first",
            metadata={"limit": str(MAX_ALIASES)},
        )


def _missing(model_id: str) -> NotFound:
    return not_found("REGISTERED_MODEL_NOT_FOUND", "registered model", model_id)


def _model(row: asyncpg.Record) -> RegisteredModel:
    return RegisteredModel(
        project=row["project"],
        id=str(row["id"]),
        name=row["name"],
        description=row["description"],
        owner=row["owner"],
        state=State(row["state"]),
        external_id=row["external_id"] or "",
        custom_properties=decode_properties(row["custom_properties"]),
        tags=dict(row["tags"]),
        aliases={alias: int(version) for alias, version in row["aliases"].items()},
        create_time=row["create_time"],
        update_time=row["update_time"],
    )
