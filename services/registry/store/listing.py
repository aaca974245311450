"""Lists of the registry's stores: filters, orders (MLflow's names too) and keyset pages."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from cairn import _names as names

from ...common import filter_sql, filters, paging
from ...common.filters import FilterError, Identifier
from ...common.sql import Params

ORDER_FIELDS = {"create_time": "timestamptz", "update_time": "timestamptz", "id": "bigint"}
_MLFLOW_ORDER = {
    "creation_timestamp": "create_time",
    "last_updated_timestamp": "update_time",
    "timestamp": "update_time",  # MLflow's store takes it for last_updated_timestamp
    "version_number": "version",
}
# What a page of a list loads at most, counted in entries (tags, custom properties and
# aliases, a model's latest versions' included) beside paging.MAX_PAGE_LOAD_BYTES: each
# costs the service about 500 bytes and 1.5 µs to decode, make into a record and convert,
# whatever its length, so a page of items made of many short entries (700 models of 512
# one-letter tags and properties, with as many in each of their 4 latest versions, are
# 17 MB of text and 1.8 million entries: 750 MB and 2.5 s) is cut by its entries long
# before its bytes. 100,000 entries are about 50 MiB and 0.15 s of work.
MAX_PAGE_LOAD_ENTRIES = 100_000
# What a row `q` of a list brings beside itself when it brings nothing.
BRINGS_NOTHING = "SELECT 0 AS bytes, 0 AS entries"
# A registered model's or version's state as filters name it (`state = 'LIVE'`).
STATE_NUMBERS = {"LIVE": 1, "ARCHIVED": 2}


@dataclass(frozen=True)
class Named:
    """A smallint column a filter compares by the names of its numbers (a state, a
    stage). LIKE matches the names (`text`); =, != and IN compare the column with the
    numbers, of which PostgreSQL keeps statistics: compared as names (a CASE), every
    condition was taken for a rare one, and a page of one model's versions filtered on
    `current_stage = 'None'` read and sorted all of them rather than walk an index."""

    column: str
    numbers: Mapping[str, int]

    @property
    def text(self) -> str:
        """SQL of each row's name."""
        whens = " ".join(f"WHEN {number} THEN '{name}'" for name, number in self.numbers.items())
        return f"(CASE {self.column} {whens} END)"


_ATTRIBUTE_ENTITIES = {"attributes": "attribute", "attribute": "attribute"}
FILTER_ENTITIES = {"tags": "tag", "tag": "tag", **_ATTRIBUTE_ENTITIES}


class Listing:
    """One page of a list, ordered by create time, update time or id, keyset-paged.

    Attributes:
        alias: the SQL alias of the listed table, e.g. "m".
        attributes: filterable attribute name -> (SQL expression, SQL type).
        tagged: whether the table has tags a filter may compare.
        orders: the fields a list orders by besides the times and the id.
        ties: an order field -> the sort columns breaking its ties, before the id.
        empty_is_unset: text columns among the attributes' that hold '' when unset
            (NOT NULL DEFAULT ''), as an unset external id holds NULL; see
            filter_sql.empty_is_unset.
        named: the attributes whose SQL expression is a Named's text (a state, a stage),
            which a filter compares in any case; see _as_named.
        quoted_numbers: integer columns among the attributes' a filter may compare with a
            quoted integer too, as MLflow's `version_number = '1'`; see _unquoted.
        run_ids: run id columns, which hold a Cairn run id in lower case (registry
            migration 0011), and a filter may name in capitals; see _run_ids_lowered.
    """

    def __init__(
        self,
        alias: str,
        attributes: Mapping[str, tuple[str, str]],
        *,
        tagged: bool = True,
        orders: Mapping[str, str | tuple[str, str, str]] | None = None,
        ties: Mapping[str, tuple[paging.SortColumn, ...]] | None = None,
        empty_is_unset: Collection[str] = (),
        named: Collection[Named] = (),
        quoted_numbers: Collection[str] = (),
        run_ids: Collection[str] = (),
    ) -> None:
        self.alias = alias
        self.attributes = attributes
        self.empty_is_unset = frozenset(empty_is_unset)
        self.named = {n.text: n for n in named}
        self.quoted_numbers = frozenset(quoted_numbers)
        self.run_ids = frozenset(run_ids)
        self.entities = FILTER_ENTITIES if tagged else _ATTRIBUTE_ENTITIES
        # What to order by besides the times and the id: a column of the table's own
        # (column -> SQL type), e.g. the name for MLflow's "name ASC", or any expression
        # (field -> (SQL, SQL type, the query's column holding its value)); the id after
        # any of them keeps the key unique, so keyset paging stays exact.
        self.orders: dict[str, str | tuple[str, str, str]] = {**ORDER_FIELDS, **(orders or {})}
        # Sort columns an order breaks its ties by, in either direction, before the id
        # (order field -> columns), e.g. a version's number after its model's name.
        self.ties = dict(ties or {})

    def where(self, filter_text: str, params: Params) -> str:
        node = filters.parse(filter_text, self.entities)
        return "TRUE" if node is None else self._compile(node, params)

    def field(self, order_by: str) -> str:
        """The field order_by ("create_time", "update_time desc", "id asc" ...) orders by."""
        return self._order(order_by)[0]

    def keyset(self, order_by: str, *scope: Any) -> paging.Keyset:
        """The sort key of "create_time", "update_time desc", "id asc" ..., id last.

        MLflow's field names (creation_timestamp, last_updated_timestamp or timestamp)
        are accepted.
        """
        field, ascending = self._order(order_by)
        order = self.orders[field]
        expression, sql_type, name = (
            (f"{self.alias}.{field}", order, field) if isinstance(order, str) else order
        )
        columns = [
            paging.SortColumn(expression, ascending, sql_type, name),
            *self.ties.get(field, ()),
            paging.SortColumn(f"{self.alias}.id", ascending, "bigint", "id"),
        ]
        return paging.Keyset(columns, *scope, order_by)

    def _order(self, order_by: str) -> tuple[str, bool]:
        """The field and direction (ascending) of order_by, read as MLflow reads an
        order clause (an `attribute.` prefix, a quoted or backticked name); creation
        time ascending when blank."""
        if not order_by.strip():
            return "create_time", True
        try:
            ident, ascending = filters.parse_order_by(order_by, _ATTRIBUTE_ENTITIES)
        except FilterError as error:  # where and what the parser found, and the keys
            raise self._wrong_order(error.position, error.problem) from None
        field = _MLFLOW_ORDER.get(ident.key.lower(), ident.key.lower())
        if ident.entity != "attribute" or field not in self.orders:
            raise self._wrong_order(ident.position, f"cannot order by {ident.key!r}")
        return field, ascending

    def _wrong_order(self, position: int, problem: str) -> FilterError:
        """INVALID_ORDER_BY at position, saying the problem and the keys the list orders
        by, MLflow's names of them too (a client written for MLflow names those)."""
        keys = ", ".join(self._order_key(field) for field in self.orders)
        return FilterError(
            position, f"{problem}; order by one of {keys}, then asc or desc", "INVALID_ORDER_BY"
        )

    @staticmethod
    def _order_key(field: str) -> str:
        """An order field with MLflow's names of it: "update_time (or
        last_updated_timestamp, timestamp)"."""
        aliases = [alias for alias, named in _MLFLOW_ORDER.items() if named == field]
        return f"{field} (or {', '.join(aliases)})" if aliases else field

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
        brings: str = BRINGS_NOTHING,
        one_valued: Collection[str] = (),
    ) -> paging.ListPage[asyncpg.Record]:
        """Runs `query` (SELECT ... FROM ... with the alias, text_bytes and entries among
        its columns) for one page, which the caller may cut shorter
        (paging.ListPage.first). brings: SQL of one row (bytes, entries) of what else the
        caller reads for a row `q`, counted with the row's own against the page's
        budgets. one_valued: order fields that hold one value on every row of the query
        (a model's name among its versions), left out of its order."""
        keyset = self.keyset(order_by, *scope)
        # A first column of one value on every row (a model's name among its versions)
        # is left out of the page's order and start: an index of the others serves them
        # (the versions of one model by name are its versions by number, which
        # (registered_model_id, version) holds, where the joined model's name is in no
        # index of them). Tokens keep the whole key: one of another query is still
        # refused, and a walk goes on across a rename of the model.
        skip = 1 if self.field(order_by) in one_valued else 0
        after = keyset.bounded_condition(page_token, params, skip)
        order = ", ".join(
            f"{c.expression} {'ASC' if c.ascending else 'DESC'}" for c in keyset.columns[skip:]
        )
        by_name = ", ".join(f"{c.name} {'ASC' if c.ascending else 'DESC'}" for c in keyset.columns)
        # The rows that begin within both load budgets, by their bytes and entries
        # (text_bytes and entries, counted when written) and what they bring, and the second
        # row in any case, so that a row past a budget says the page is cut before it.
        # A row beginning at a budget is read too: one ending there fits, and only the
        # row after it tells whether the page goes on.
        rows = await conn.fetch(
            f"""SELECT * FROM (
                    SELECT item.*, sum(item.loads) OVER w AS loaded,
                           sum(item.holds) OVER w AS held, row_number() OVER w AS n
                    FROM (SELECT q.*, (q.text_bytes + b.bytes)::integer AS loads,
                                 (q.entries + b.entries)::integer AS holds
                          FROM ({query} WHERE {" AND ".join(where)} AND {after}
                                ORDER BY {order} LIMIT {params.add(page_size + 1)}) q
                          CROSS JOIN LATERAL ({brings}) b) item
                    WINDOW w AS (ORDER BY {by_name})
                ) page
                WHERE n <= 2 OR (loaded - loads <= {params.add(paging.MAX_PAGE_LOAD_BYTES)}
                                 AND held - holds <= {params.add(MAX_PAGE_LOAD_ENTRIES)})
                ORDER BY {by_name}""",
            *params.values,
        )
        if len(rows) > 1 and _past_budgets(rows[-1]):
            rows = rows[:-1]  # the page is cut before it, and continues there
            next_page_token = keyset.token_after(rows[-1])
        else:
            next_page_token = keyset.next_token(rows, page_size)
        return paging.ListPage(
            rows[:page_size], next_page_token, lambda count: keyset.next_token(rows, count)
        )

    def _compile(self, node: filters.Node, params: Params) -> str:
        if isinstance(node, filters.BoolOp):
            return "(" + f" {node.op} ".join(self._compile(n, params) for n in node.operands) + ")"
        if node.ident.entity == "tag":
            value = f"({self.alias}.tags ->> {params.add(node.ident.key)})"
            if isinstance(node, filters.NullCheck):
                return f"{value} IS {'' if node.is_null else 'NOT '}NULL"
            return filter_sql.condition(value, node, params, "text")
        column, sql_type = self._attribute(node.ident)
        if column in self.run_ids and isinstance(node, filters.Comparison):
            node = _each_value(node, _run_id_lowered)
        if column in self.empty_is_unset:
            return filter_sql.empty_is_unset(column, node, params)
        if column in self.named:  # never null: IS NULL is refused as > is
            named = self.named[column]
            node = _as_named(node, tuple(named.numbers))
            if node.op not in ("LIKE", "ILIKE"):
                numbers = tuple(named.numbers[str(name)] for name in node.values)
                compared = numbers if node.op == "IN" else numbers[0]
                node = filters.Comparison(node.ident, node.op, compared, node.negated)
                column, sql_type = named.column, "smallint"
        if isinstance(node, filters.NullCheck):
            return f"{column} IS {'' if node.is_null else 'NOT '}NULL"
        if column in self.quoted_numbers:
            node = _each_value(node, _unquoted)
        return filter_sql.condition(column, node, params, sql_type)

    def _attribute(self, ident: Identifier) -> tuple[str, str]:
        if ident.key not in self.attributes:
            known = ", ".join(self.attributes)
            raise FilterError(
                ident.position, f"unknown attribute {ident.key!r}; use one of {known}"
            )
        return self.attributes[ident.key]


def _past_budgets(row: asyncpg.Record) -> bool:
    """Whether a page that ends with row loads more than one of its budgets."""
    return bool(row["loaded"] > paging.MAX_PAGE_LOAD_BYTES or row["held"] > MAX_PAGE_LOAD_ENTRIES)


# An integer as a quoted filter value may spell it, in at most int64's 19 digits after
# any leading zeros (a longer one stays text, refused as any text is for a number).
_QUOTED_INTEGER = re.compile(r"[+-]?0*[0-9]{1,19}")


def _each_value(node: filters.Comparison, convert: Callable[[Any], Any]) -> filters.Comparison:
    """The comparison with each of its values converted; LIKE's patterns are left as
    they are."""
    if node.op in ("LIKE", "ILIKE"):
        return node
    values = tuple(convert(value) for value in node.values)
    return filters.Comparison(
        node.ident, node.op, values if node.op == "IN" else values[0], node.negated
    )


def _unquoted(value: Any) -> Any:
    """A quoted integer ('1') as the number it spells, as MLflow's search_model_versions
    compares `version_number = '1'` (its stores take the quoted value for the number)."""
    return int(value) if isinstance(value, str) and _QUOTED_INTEGER.fullmatch(value) else value


def _run_id_lowered(value: Any) -> Any:
    """A Cairn run id (32 hexadecimal digits) in lower case, as stored: a version
    registered with the id in capitals is found by the id as given, and as runs answer
    it."""
    return value.lower() if isinstance(value, str) and names.RUN_ID.fullmatch(value) else value


def _as_named(
    node: filters.Comparison | filters.NullCheck, names: tuple[str, ...]
) -> filters.Comparison:
    """The comparison with each value spelled as `names` spell it, matched in any case
    as stage transitions match them ('production' is Production), as tracking's
    attributes.status is. Any other value is refused rather than matching nothing.
    A LIKE pattern is left as it is: the expression gives the names, which it matches
    as spelled (ILIKE in any case), as tracking's LIKE on the status does.

    Raises:
        FilterError: an operator other than =, !=, IN, LIKE and ILIKE, or a value not
            among names.
    """
    key = node.ident.key
    if isinstance(node, filters.Comparison) and node.op in ("LIKE", "ILIKE"):
        return node
    if not isinstance(node, filters.Comparison) or node.op not in ("=", "!=", "IN"):
        raise FilterError(
            node.ident.position, f"{key} supports =, !=, [NOT] IN, [NOT] LIKE and [NOT] ILIKE"
        )
    by_lower = {name.lower(): name for name in names}
    values = node.values
    spelled = []
    for value in values:
        if not isinstance(value, str) or value.lower() not in by_lower:
            raise FilterError(
                node.ident.position, f"{key} is one of {', '.join(names)} (in any case)"
            )
        spelled.append(by_lower[value.lower()])
    value_or_list = tuple(spelled) if node.op == "IN" else spelled[0]
    return filters.Comparison(node.ident, node.op, value_or_list, node.negated)
