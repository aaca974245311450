"""Turning the comparisons of a parsed filter into parameterized SQL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .filters import Comparison, FilterError, Identifier, NullCheck, is_int64
from .sql import Params

_OPERATORS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
NUMERIC_TYPES = {"bigint", "double precision", "smallint"}


def condition(column: str, node: Comparison, params: Params, sql_type: str) -> str:
    """`column <op> value` for one comparison, after checking the value's type.

    Args:
        column: SQL expression of the compared field.
        node: the comparison.
        params: collects the values.
        sql_type: "text" or a numeric SQL type; decides which values are accepted.
    """
    numeric = sql_type in NUMERIC_TYPES
    values = node.values
    for value in values:
        if isinstance(value, str) == numeric:
            wanted = "a number" if numeric else "a 'quoted string'"
            raise FilterError(node.ident.position, f"{node.ident.key} compares with {wanted}")
    if node.op in ("LIKE", "ILIKE"):
        # PostgreSQL compares the pattern at each position of each value it tests (and
        # ILIKE lowercases the value first): the parser bounds these terms and their
        # patterns' characters (filters.LIMITS), which bounds what they cost.
        if numeric:
            raise FilterError(node.ident.position, f"{node.op} applies to text fields only")
        return f"{column} {'NOT ' if node.negated else ''}{node.op} {params.add(node.value)}"
    converted = [_convert(v, sql_type, node) for v in values]
    if node.op == "IN":
        array = params.add(converted, f"{sql_type}[]")
        return f"{'NOT ' if node.negated else ''}({column} = ANY({array}))"
    return f"{column} {_OPERATORS[node.op]} {params.add(converted[0], sql_type)}"


def empty_is_unset(column: str, node: Comparison | NullCheck, params: Params) -> str:
    """A term on a text column holding '' when unset, read as the client reads the
    field (None) and as a filter reads an unset external id (NULL): IS NULL finds the
    empty value, and no comparison (=, !=, IN, LIKE, <) matches it. Spelled with the
    column itself rather than NULLIF(column, ''), whose matches PostgreSQL cannot
    estimate (0.5% of rows, whatever the value): `= 'x'` then plans as before."""
    if isinstance(node, NullCheck):
        return f"{column} {'=' if node.is_null else '<>'} ''"
    compared = condition(column, node, params, "text")
    values = node.values
    if node.op in ("=", "IN") and not node.negated and "" not in values:
        return compared  # it cannot match ''
    return f"({compared} AND {column} <> '')"


def prefixed_condition(column: str, node: Comparison, params: Params, prefix: int) -> str:
    """condition() for a text column indexed by its first `prefix` characters
    (`left(column, prefix)`). An equality (= or IN, not negated) compares that prefix,
    which the index serves: alone when every value is shorter than the prefix, since a
    value's first `prefix` characters equal such a text only if they are all of it;
    otherwise with the whole value too. Given both, PostgreSQL takes them for
    independent and expects a value's holders to be its share of the rows squared."""
    values = node.values
    if node.negated or node.op not in ("=", "IN") or not all(isinstance(v, str) for v in values):
        return condition(column, node, params, "text")
    starts = [str(value)[:prefix] for value in values]
    if node.op == "IN":
        prefixed = f"left({column}, {prefix}) = ANY({params.add(starts, 'text[]')})"
    else:
        prefixed = f"left({column}, {prefix}) = {params.add(starts[0], 'text')}"
    if all(len(str(value)) < prefix for value in values):
        return prefixed
    return f"{condition(column, node, params, 'text')} AND {prefixed}"


def _convert(value: Any, sql_type: str, node: Comparison) -> Any:
    """The Python value asyncpg expects for a parameter of sql_type."""
    if sql_type == "double precision":
        return float(value)
    if sql_type not in ("bigint", "smallint"):
        return value
    if not is_int64(value):
        raise FilterError(node.ident.position, f"{node.ident.key} compares with an integer")
    return int(value)


class Lookups:
    """One LEFT JOIN per distinct key a filter compares, however many terms use it.

    A statement that grows by a join per key, not per term, plans in time linear in the
    filter; an EXISTS per term let PostgreSQL's planner run for minutes and gigabytes
    (filters.LIMITS caps the keys). A key the row lacks joins as NULLs.

    Args:
        params: collects the keys.
        tables: entity -> key/value table, e.g. {"tag": "tracking.experiment_tags"}.
        owner: (the tables' column naming the listed row, that row's id expression).
        per_owner: look the values up by the owner alone (the key compared in a form no
            index serves), for statements that test one row at a time: the planner can
            then only use the (owner, key) primary key, never read a key's every entry
            for each row, whatever its statistics.
        prefix: the tables' (key, value) indexes hold the first `prefix` characters of
            each value (`left(value, prefix)`): see prefixed_condition.
    """

    def __init__(
        self,
        params: Params,
        tables: Mapping[str, str],
        owner: tuple[str, str],
        per_owner: bool = False,
        prefix: int | None = None,
    ) -> None:
        self._params, self._tables, self._owner = params, tables, owner
        self._prefix = prefix
        self._key = "{}.key || ''" if per_owner else "{}.key"
        self._aliases: dict[tuple[str, str], str] = {}
        self.joins: list[str] = []

    def condition(self, node: Comparison | NullCheck, sql_type: str) -> str:
        """SQL for one term on a looked-up key; NULL (acting as false, since no NOT
        stands above a term) when the row lacks the key."""
        alias = self._alias(node.ident)
        if isinstance(node, NullCheck):
            return f"({alias}.{self._owner[0]} IS {'' if node.is_null else 'NOT '}NULL)"
        value = f"{alias}.value"
        if self._prefix and sql_type == "text":
            sql = prefixed_condition(value, node, self._params, self._prefix)
        else:
            sql = condition(value, node, self._params, sql_type)
        if sql_type == "double precision" and node.op != "!=" and not node.negated:
            # IEEE semantics: NaN is neither equal to, smaller nor greater than anything.
            sql += f" AND {value} <> 'NaN'"
        return f"({sql})"

    def _alias(self, ident: Identifier) -> str:
        found = (ident.entity, ident.key)
        if found not in self._aliases:
            alias = self._aliases[found] = f"f{len(self._aliases)}"
            column, owner = self._owner
            self.joins.append(
                f"LEFT JOIN {self._tables[ident.entity]} {alias} ON {alias}.{column} = {owner} "
                f"AND {self._key.format(alias)} = {self._params.add(ident.key)}"
            )
        return self._aliases[found]
