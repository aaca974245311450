"""Model versions: numbered per model, staged, aliased, tagged, listed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from ...common.errors import invalid_field
from ..model import ModelVersion
from ..validation import own_files, uri
from .common import (
    clash,
    clashing_value,
    encode_properties,
    id_or_none,
    not_found,
    take_turn_for_external_id,
    update_row,
    updating,
    write_tag,
)
from .version_listing import VersionListing
from .version_rows import COLUMNS, missing, one_version, touch_model, with_aliases
from .version_stages import VersionStages

# A stored URI with its spaces and controls dropped: URL parsers skip those before a URI
# and drop tabs and line breaks within it, so " file:m" is a file: URI to them (one
# stored before the registry refused such URIs). Dropping the spaces within it too only
# makes "fi le:m" pass for one, which is no URI a client could use either.
_AS_PARSED = "regexp_replace({}, '[\\x01-\\x20\\x7f]', '', 'g')"
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


class VersionStore(VersionStages, VersionListing):
    """A registered model's versions, their parts in their modules: stages and the latest
    versions (`version_stages.py`), lists (`version_listing.py`) and what the parts share
    (`version_rows.py`); here, versions created, read, updated and deleted."""

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
            await touch_model(conn, project, version_id)
            deleted = await conn.fetchval(
                """DELETE FROM registry.model_versions WHERE project = $1 AND id = $2
                   RETURNING id""",
                project,
                id_or_none(version_id),
            )
            if deleted is None:
                raise missing(version_id)

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
                raise missing(str(number))

    async def set_tag(self, project: str, version_id: str, key: str, value: str | None) -> None:
        if not await write_tag(self._pool, "model_versions", project, version_id, key, value):
            raise missing(version_id)

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
            raise missing(version_id)
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
                return await one_version(own, project, condition, values, shown, lock)
        return await one_version(conn, project, condition, values, shown, lock)


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
