"""What the registry's stores share: conflicts, typed properties, listing pages."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg

from ...common import filter_sql, filters, paging
from ...common.errors import AlreadyExists, NotFound
from ...common.filters import FilterError, Identifier
from ...common.sql import Params, keyset_after
from ..model import PropertyValue

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
ORDER_FIELDS = {"create_time": "timestamptz", "update_time": "timestamptz", "id": "bigint"}
FILTER_ENTITIES = {"tags": "tag", "tag": "tag", "attributes": "attribute", "attribute": "attribute"}


def clash(error: asyncpg.UniqueViolationError, value: str) -> AlreadyExists:
    reason, what = _CLASHES.get(error.constraint_name or "", ("ALREADY_EXISTS", "value"))
    return AlreadyExists(reason, f"{what} {value!r} is already taken", metadata={"value": value})


def not_found(reason: str, what: str, key: str) -> NotFound:
    return NotFound(reason, f"{what} {key} not found", metadata={"id": key})


def encode_properties(values: Mapping[str, PropertyValue]) -> dict[str, dict[str, Any]]:
    """Typed JSON: ints travel as strings (JSON numbers lose int64 precision), and
    non-finite doubles as their names (JSON has no NaN)."""
    encoded: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if isinstance(value, bool):
            encoded[key] = {"bool": value}
        elif isinstance(value, int):
            encoded[key] = {"int": str(value)}
        elif isinstance(value, float):
            encoded[key] = {"double": value if math.isfinite(value) else repr(value)}
        else:
            encoded[key] = {"string": value}
    return encoded


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


def id_or_none(value: str) -> int | None:
    return int(value) if value.isdigit() and len(value) < 19 else None


class Listing:
    """One page of a list, ordered by create time, update time or id, keyset-paged.

    Attributes:
        alias: the SQL alias of the listed table, e.g. "m".
        attributes: filterable attribute name -> (SQL expression, SQL type).
    """

    def __init__(self, alias: str, attributes: Mapping[str, tuple[str, str]]) -> None:
        self.alias = alias
        self.attributes = attributes

    def where(self, filter_text: str, params: Params) -> str:
        node = filters.parse(filter_text, FILTER_ENTITIES)
        return "TRUE" if node is None else self._compile(node, params)

    def order(self, order_by: str) -> tuple[str, bool, str]:
        """(column, ascending, SQL type) from "create_time", "update_time desc", "id asc" ..."""
        words = order_by.split()
        field = words[0].lower() if words else "create_time"
        direction = words[1].lower() if len(words) > 1 else "asc"
        if field not in ORDER_FIELDS or direction not in ("asc", "desc") or len(words) > 2:
            raise FilterError(0, "order by create_time, update_time or id, then asc or desc")
        return f"{self.alias}.{field}", direction == "asc", ORDER_FIELDS[field]

    async def page(
        self,
        conn: asyncpg.Connection,
        query: str,
        where: list[str],
        params: Params,
        order_by: str,
        page_size: int,
        page_token: str,
        scope: list[Any],
    ) -> tuple[list[asyncpg.Record], str]:
        """Runs `query` (SELECT ... FROM ... with the alias) for one page."""
        column, ascending, sql_type = self.order(order_by)
        columns = [(column, ascending, sql_type), (f"{self.alias}.id", ascending, "bigint")]
        fingerprint = paging.fingerprint(*scope, order_by)
        last = paging.decode(page_token, fingerprint)
        if last is not None:
            if sql_type == "timestamptz":
                last = [datetime.fromisoformat(last[0]), last[1]]
            where = [*where, keyset_after(columns, last, params)]
        direction = "ASC" if ascending else "DESC"
        limit = params.add(page_size + 1)
        rows = await conn.fetch(
            f"""{query} WHERE {" AND ".join(where)}
                ORDER BY {column} {direction}, {self.alias}.id {direction} LIMIT {limit}""",
            *params.values,
        )
        token = ""
        if len(rows) > page_size:
            tail = rows[page_size - 1]
            key = tail[column.split(".")[1]]
            token = paging.encode(
                fingerprint, [key.isoformat() if isinstance(key, datetime) else key, tail["id"]]
            )
        return rows[:page_size], token

    def _compile(self, node: filters.Node, params: Params) -> str:
        if isinstance(node, filters.BoolOp):
            return "(" + f" {node.op} ".join(self._compile(n, params) for n in node.operands) + ")"
        if node.ident.entity == "tag":
            value = f"({self.alias}.tags ->> {params.add(node.ident.key)})"
            if isinstance(node, filters.NullCheck):
                return f"{value} IS {'' if node.is_null else 'NOT '}NULL"
            return filter_sql.condition(value, node, params, "text")
        column, sql_type = self._attribute(node.ident)
        if isinstance(node, filters.NullCheck):
            return f"{column} IS {'' if node.is_null else 'NOT '}NULL"
        return filter_sql.condition(column, node, params, sql_type)

    def _attribute(self, ident: Identifier) -> tuple[str, str]:
        if ident.key not in self.attributes:
            known = ", ".join(self.attributes)
            raise FilterError(
                ident.position, f"unknown attribute {ident.key!r}; use one of {known}"
            )
        return self.attributes[ident.key]


async def update_row(
    conn: asyncpg.Connection,
    table: str,
    row_id: int,
    changes: Mapping[str, Any],
    updatable: tuple[str, ...],
    external_id: str,
) -> None:
    """Sets the updatable fields among changes on one row and bumps its update time.

    Custom properties are stored typed, and an empty external id as NULL (no id).
    """
    values = {k: v for k, v in changes.items() if k in updatable}
    if "custom_properties" in values:
        values["custom_properties"] = encode_properties(values["custom_properties"])
    if "external_id" in values:
        values["external_id"] = values["external_id"] or None
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


async def delete_row(pool: asyncpg.Pool, table: str, project: str, row_id: str) -> bool:
    """Deletes one row of a registry table (cascading to what it owns); False when absent."""
    async with pool.acquire() as conn:
        found = await conn.fetchval(
            f"DELETE FROM registry.{table} WHERE project = $1 AND id = $2 RETURNING id",
            project,
            id_or_none(row_id),
        )
    return found is not None


async def write_tag(
    pool: asyncpg.Pool, table: str, project: str, row_id: str, key: str, value: str | None
) -> bool:
    """Sets a tag on one row (or removes it when value is None); False when the row is absent."""
    if value is None:
        expression, args = "tags - $3::text", [key]
    else:
        expression, args = "tags || jsonb_build_object($3::text, $4::text)", [key, value]
    async with pool.acquire() as conn:
        found = await conn.fetchval(
            f"""UPDATE registry.{table} SET tags = {expression}, update_time = clock_timestamp()
                WHERE project = $1 AND id = $2 RETURNING id""",
            project,
            id_or_none(row_id),
            *args,
        )
    return found is not None
