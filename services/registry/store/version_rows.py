"""What the version store's parts share: a version's columns and record, its lookup, its model."""

from __future__ import annotations

from typing import Any

import asyncpg

from ...common.errors import NotFound
from ..model import ModelVersion, Stage, State
from .common import decode_properties, fetch_one, id_or_none, not_found

COLUMNS = """v.id, v.project, v.registered_model_id, v.name, v.version, v.author, v.description,
    v.state, v.stage, v.source_run_id, v.source_uri, v.external_id, v.custom_properties, v.tags,
    v.text_bytes, v.entries, v.create_time, v.update_time,
    (SELECT m.name FROM registry.registered_models m WHERE m.id = v.registered_model_id)
        AS model_name,
    ARRAY(SELECT a.alias FROM registry.aliases a WHERE a.model_version_id = v.id
          ORDER BY a.alias) AS aliases"""


async def one_version(
    conn: asyncpg.Connection,
    project: str,
    condition: str,
    values: list[Any],
    shown: str,
    lock: bool = False,
) -> ModelVersion:
    """The project's version that meets condition (over `v`; $1 is the project, values are
    $2 on), locked FOR UPDATE when asked; MODEL_VERSION_NOT_FOUND naming `shown` if none."""
    row = await fetch_one(conn, "model_versions", "v", COLUMNS, condition, [project, *values], lock)
    if row is None:
        raise missing(shown)
    return (await with_aliases(conn, [row]))[0]


async def touch_model(conn: asyncpg.Connection, project: str, version_id: str) -> None:
    """Sets the update time of the version's model, which holds its row lock until the
    transaction ends (none when there is no such version)."""
    await conn.execute(
        """UPDATE registry.registered_models m SET update_time = clock_timestamp()
           WHERE m.id = (SELECT v.registered_model_id FROM registry.model_versions v
                         WHERE v.project = $1 AND v.id = $2)""",
        project,
        id_or_none(version_id),
    )


async def with_aliases(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> list[ModelVersion]:
    """Versions of the rows; COLUMNS already carries their aliases and model names."""
    return [version_of(row) for row in rows]


def missing(shown: str) -> NotFound:
    return not_found("MODEL_VERSION_NOT_FOUND", "model version", shown)


def version_of(row: asyncpg.Record) -> ModelVersion:
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
