"""What the registry's stores share: conflicts, typed properties, one row's reads and writes."""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import asyncpg

from ...common.errors import AlreadyExists, NotFound, invalid_field
from ...common.sql import Params, take_turns, took_turn
from ..model import PropertyValue
from ..validation import MAX_OBJECT_BYTES, MAX_TAGS, object_size

# Unique constraints and the reason each clash reports.
_CLASHES = {
    "registered_models_project_name_key": (
        "REGISTERED_MODEL_ALREADY_EXISTS",
        "registered model name",
    ),
    "model_versions_registered_model_id_name_key": (
        "MODEL_VERSION_ALREADY_EXISTS",
        "model version name",
    ),
    "artifacts_name": ("ARTIFACT_ALREADY_EXISTS", "artifact name"),
    "external_ids_pkey": ("EXTERNAL_ID_ALREADY_EXISTS", "external id"),
}
# The message of each table's rows, to name a field of it.
_MESSAGES = {
    "registered_models": "registered_model",
    "model_versions": "model_version",
    "artifacts": "artifact",
}


def clash(error: asyncpg.UniqueViolationError, value: str) -> AlreadyExists:
    reason, what = _CLASHES.get(error.constraint_name or "", ("ALREADY_EXISTS", "value"))
    return AlreadyExists(reason, f"{what} {value!r} is already taken", metadata={"value": value})


def not_found(reason: str, what: str, key: str) -> NotFound:
    return NotFound(reason, f"{what} {key} not found", metadata={"id": key})


def encode_properties(values: Mapping[str, PropertyValue]) -> dict[str, dict[str, Any]]:
    """Typed JSON: ints travel as strings (JSON numbers lose int64 precision), and
    doubles a JSON number of jsonb cannot hold as their repr (jsonb has no NaN or
    infinity, and its numbers, PostgreSQL's numeric, no negative zero)."""
    encoded: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if isinstance(value, bool):
            encoded[key] = {"bool": value}
        elif isinstance(value, int):
            encoded[key] = {"int": str(value)}
        elif isinstance(value, float):
            encoded[key] = {"double": value if _a_json_number(value) else repr(value)}
        else:
            encoded[key] = {"string": value}
    return encoded


def _a_json_number(value: float) -> bool:
    return math.isfinite(value) and (value != 0 or math.copysign(1.0, value) > 0)


def decode_properties(stored: Mapping[str, Mapping[str, Any]]) -> dict[str, PropertyValue]:
    decoded: dict[str, PropertyValue] = {}
    for key, typed in stored.items():
        ((kind, value),) = typed.items()
        if kind == "int":
            decoded[key] = int(value)
        elif kind == "double":
            decoded[key] = float(value)
        else:
            decoded[key] = value
    return decoded


# The one spelling of an id the registry gives out: ASCII digits without a leading zero,
# short enough for a bigint. str.isdigit() would also take "²" (which int() refuses)
# and Arabic-Indic digits (which int() reads as another model's number).
_ID = re.compile(r"[1-9][0-9]{0,17}")


def id_or_none(value: str) -> int | None:
    """The row id `value` spells, or None (matching no row) for any other text."""
    return int(value) if _ID.fullmatch(value) else None


async def update_row(
    conn: asyncpg.Connection,
    table: str,
    project: str,
    row_id: int,
    changes: Mapping[str, Any],
    updatable: tuple[str, ...],
    external_id: str,
    tags: Mapping[str, str] | None = None,
) -> None:
    """Sets the updatable fields among changes on one row and bumps its update time.

    Custom properties are stored typed, and an empty external id as NULL (no id); with
    the row's tags (its current ones: the caller holds its lock) they must fit in
    MAX_OBJECT_BYTES. external_id is the row's current one; a change of it needs its
    turn (take_turn_for_external_id), else TurnMissed.
    """
    values = {k: v for k, v in changes.items() if k in updatable}
    if "custom_properties" in values:
        properties = values["custom_properties"]
        object_size(properties, tags or {}, f"{_MESSAGES[table]}.custom_properties")
        values["custom_properties"] = encode_properties(properties)
    if "external_id" in values:
        values["external_id"] = values["external_id"] or None
        changed = values["external_id"] != (external_id or None)
        if changed and not await took_turn(conn, *_turn(project)):  # as a rule, held
            raise TurnMissed
    if not values:
        return
    params = Params(row_id)
    assignments = [f"{column} = {params.add(value)}" for column, value in values.items()]
    try:
        await conn.execute(
            f"""UPDATE registry.{table} SET {", ".join(assignments)},
                    update_time = clock_timestamp() WHERE id = $1""",
            *params.values,
        )
    except asyncpg.UniqueViolationError as error:
        raise clash(error, str(values.get("external_id", external_id))) from None


T = TypeVar("T")


class TurnMissed(Exception):
    """An update found under its row's lock that it changes the row's external id, as
    it did not when it read the id before (another change of the row came between),
    and the project's turn taken by another: waiting for it there, holding the row,
    could deadlock with the update whose turn it is, waiting for that row."""


async def updating(
    pool: asyncpg.Pool, update: Callable[[asyncpg.Connection, bool], Awaitable[T]]
) -> T:
    """update(conn, surely) run in a transaction: once with surely False, and again with
    surely True (its turn taken whatever the stored id) if it missed its turn."""
    try:
        async with pool.acquire() as conn, conn.transaction():
            return await update(conn, False)
    except TurnMissed:
        async with pool.acquire() as conn, conn.transaction():
            return await update(conn, True)


async def take_turn_for_external_id(
    conn: asyncpg.Connection,
    table: str,
    project: str,
    row_id: int | None,
    changes: Mapping[str, Any],
    surely: bool = False,
) -> None:
    """Takes the turn of project's external id changes when changes would change the
    row's external id (surely: whenever they set it), before the caller locks the row.

    Changes of ids take turns so that each sees the ids the one before left: two rows
    taking each other's id at once each freed its own (sync_external_id deletes it from
    external_ids), then waited for the other's to be freed, and PostgreSQL aborted one
    of them as a deadlock: ABORTED, "call again", where either order of the two answers
    ALREADY_EXISTS. The turn comes before the row's lock, the one order of the two: an
    update waiting for its turn holds no row the update whose turn it is could need.
    update_row, which finds under the lock whether the id changes, takes the turn there
    only if it is free, else raises TurnMissed (see updating)."""
    if "external_id" not in changes or row_id is None:
        return
    if not surely:
        stored = await conn.fetchval(
            f"SELECT external_id FROM registry.{table} WHERE project = $1 AND id = $2",
            project,
            row_id,
        )
        if (changes["external_id"] or None) == stored:
            return
    await take_turns(conn, *_turn(project))


def _turn(project: str) -> tuple[str, str]:
    return "registry.external_ids", project


def clashing_value(error: asyncpg.UniqueViolationError, name: str, external_id: str) -> str:
    """Which of the two values a unique violation is about, for the error message."""
    return external_id if error.constraint_name == "external_ids_pkey" else name


async def fetch_one(
    conn: asyncpg.Connection,
    table: str,
    alias: str,
    columns: str,
    condition: str,
    values: list[Any],
    lock: bool,
) -> asyncpg.Record | None:
    """The row of `table AS alias` in project values[0] that meets condition; None when
    there is none or a value could not match anything (None, e.g. a malformed id)."""
    if any(v is None for v in values):
        return None
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""SELECT {columns} FROM registry.{table} {alias}
            WHERE {alias}.project = $1 AND {condition} {"FOR UPDATE" if lock else ""}""",
        *values,
    )
    return row


def row_key(row_id: str, name: str) -> tuple[str, Any]:
    """The column and value a write finds its row by: its id, or its name when given
    (MLflow's way), which the write's own statement then matches, so that a row renamed
    or deleted meanwhile is not written."""
    return ("name", name) if name else ("id", id_or_none(row_id))


async def delete_row(
    pool: asyncpg.Pool, table: str, project: str, row_id: str, *, name: str = ""
) -> bool:
    """Deletes one row of a registry table (cascading to what it owns), by its id or by
    name when given, matched by the DELETE itself (a row renamed meanwhile is not one
    of that name); False when absent."""
    key, value = row_key(row_id, name)
    async with pool.acquire() as conn:
        found = await conn.fetchval(
            f"DELETE FROM registry.{table} WHERE project = $1 AND {key} = $2 RETURNING id",
            project,
            value,
        )
    return found is not None


def _object_bytes_sql(tags: str) -> str:
    """SQL of validation.object_bytes for row `t`: its custom properties (typed JSON,
    see encode_properties) and the tags object the SQL expression `tags` gives."""
    return f"""((SELECT coalesce(sum(octet_length(p.key)
                                     + coalesce(octet_length(p.value ->> 'string'), 8)), 0)
                  FROM jsonb_each(t.custom_properties) p)
               + (SELECT coalesce(sum(octet_length(g.key) + octet_length(g.value)), 0)
                  FROM jsonb_each_text({tags}) g))"""


async def write_tag(
    pool: asyncpg.Pool, table: str, project: str, row_id: str, key: str, value: str | None
) -> bool:
    """Sets a tag on one row (or removes it when value is None); False when the row is absent.

    The limits are conditions of the UPDATE itself: a concurrent set of the same row
    makes PostgreSQL read the row again and test them on what that set left, so two
    sets can never pass a limit together.

    The row's update time stays as it is, as in MLflow, whose tags are rows of their
    own: a tag set by a CI job must not reorder models listed by last update.

    Raises:
        InvalidArgument: the row holds MAX_TAGS other tags, or the tag would take its
            properties and tags past MAX_OBJECT_BYTES.
    """
    args: list[Any] = [key]
    if value is None:
        expression, limits = "t.tags - $3::text", ""
    else:
        expression = "t.tags || jsonb_build_object($3::text, $4::text)"
        limits = f"""AND (t.tags ? $3::text
                          OR (SELECT count(*) FROM jsonb_object_keys(t.tags)) < $5)
                     AND {_object_bytes_sql(expression)} <= $6"""
        args += [value, MAX_TAGS, MAX_OBJECT_BYTES]
    async with pool.acquire() as conn:
        found = await conn.fetchval(
            f"""UPDATE registry.{table} t SET tags = {expression}
                WHERE t.project = $1 AND t.id = $2 {limits} RETURNING t.id""",
            project,
            id_or_none(row_id),
            *args,
        )
        if found is None and value is not None:
            await _refuse_full(conn, table, project, row_id)
    return found is not None


async def _refuse_full(conn: asyncpg.Connection, table: str, project: str, row_id: str) -> None:
    """Raises the limit a tag's set failed on, if the row exists (the set changed nothing)."""
    row = await conn.fetchrow(
        f"""SELECT (SELECT count(*) FROM jsonb_object_keys(t.tags)) AS tags,
                   {_object_bytes_sql("t.tags")} AS bytes
            FROM registry.{table} t WHERE t.project = $1 AND t.id = $2""",
        project,
        id_or_none(row_id),
    )
    if row is not None:
        raise invalid_field(
            "key",
            f"the tag does not fit: {row['tags']} tags of at most {MAX_TAGS}, and "
            f"{row['bytes']} bytes of properties and tags of at most {MAX_OBJECT_BYTES} "
            "(keys and string values in UTF-8); delete tags first",
        )
