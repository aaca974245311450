"""What the registry's stores share: conflicts, typed properties, listing pages."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import asyncpg

from ...common import filter_sql, filters, paging
from ...common.errors import AlreadyExists, NotFound
from ...common.filters import FilterError, Identifier
from ...common.sql import Params
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
_MLFLOW_ORDER = {
    "creation_timestamp": "create_time",
    "last_updated_timestamp": "update_time",
    "version_number": "version",
}
_ATTRIBUTE_ENTITIES = {"attributes": "attribute", "attribute": "attribute"}
FILTER_ENTITIES = {"tags": "tag", "tag": "tag", **_ATTRIBUTE_ENTITIES}


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


# The one spelling of an id the registry gives out: ASCII digits without a leading zero,
# short enough for a bigint. str.isdigit() would also take "²" (which int() refuses)
# and Arabic-Indic digits (which int() reads as another model's number).
_ID = re.compile(r"[1-9][0-9]{0,17}")


def id_or_none(value: str) -> int | None:
    """The row id `value` spells, or None (matching no row) for any other text."""
    return int(value) if _ID.fullmatch(value) else None


class Listing:
    """One page of a list, ordered by create time, update time or id, keyset-paged.

    Attributes:
        alias: the SQL alias of the listed table, e.g. "m".
        attributes: filterable attribute name -> (SQL expression, SQL type).
        tagged: whether the table has tags a filter may compare.
    """

    def __init__(
        self,
        alias: str,
        attributes: Mapping[str, tuple[str, str]],
        *,
        tagged: bool = True,
        orders: Mapping[str, str] | None = None,
    ) -> None:
        self.alias = alias
        self.attributes = attributes
        self.entities = FILTER_ENTITIES if tagged else _ATTRIBUTE_ENTITIES
        # Columns of the table's own to order by besides the times and the id (column
        # -> SQL type), e.g. the name for MLflow's "name ASC"; the id after any of them
        # keeps the key unique, so keyset paging stays exact.
        self.orders = {**ORDER_FIELDS, **(orders or {})}

    def where(self, filter_text: str, params: Params) -> str:
        node = filters.parse(filter_text, self.entities)
        return "TRUE" if node is None else self._compile(node, params)

    def keyset(self, order_by: str, *scope: Any) -> paging.Keyset:
        """The sort key of "create_time", "update_time desc", "id asc" ..., id last.

        MLflow's field names (creation_timestamp, last_updated_timestamp) are accepted.
        """
        words = order_by.split()
        field = _MLFLOW_ORDER.get(words[0].lower(), words[0].lower()) if words else "create_time"
        direction = words[1].lower() if len(words) > 1 else "asc"
        if field not in self.orders or direction not in ("asc", "desc") or len(words) > 2:
            raise FilterError(
                0,
                f"order by one of {', '.join(self.orders)}, then asc or desc",
                "INVALID_ORDER_BY",
            )
        ascending = direction == "asc"
        columns = [
            paging.SortColumn(f"{self.alias}.{field}", ascending, self.orders[field], field),
            paging.SortColumn(f"{self.alias}.id", ascending, "bigint", "id"),
        ]
        return paging.Keyset(columns, *scope, order_by)

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
        keyset = self.keyset(order_by, *scope)
        after = keyset.condition(page_token, params)
        order = ", ".join(
            f"{c.expression} {'ASC' if c.ascending else 'DESC'}" for c in keyset.columns
        )
        rows = await conn.fetch(
            f"""{query} WHERE {" AND ".join(where)} AND {after}
                ORDER BY {order} LIMIT {params.add(page_size + 1)}""",
            *params.values,
        )
        page = keyset.page(rows, page_size, lambda row: row)
        return page.items, page.next_page_token

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
