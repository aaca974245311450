"""Turning one comparison of a parsed filter into parameterized SQL."""

from __future__ import annotations

from typing import Any

from .filters import Comparison, FilterError
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
    values = node.value if isinstance(node.value, tuple) else (node.value,)
    for value in values:
        if isinstance(value, str) == numeric:
            wanted = "a number" if numeric else "a 'quoted string'"
            raise FilterError(node.ident.position, f"{node.ident.key} compares with {wanted}")
    if node.op in ("LIKE", "ILIKE"):
        if numeric:
            raise FilterError(node.ident.position, f"{node.op} applies to text fields only")
        return f"{column} {'NOT ' if node.negated else ''}{node.op} {params.add(node.value)}"
    converted = [_convert(v, sql_type, node) for v in values]
    if node.op == "IN":
        array = params.add(converted, f"{sql_type}[]")
        return f"{'NOT ' if node.negated else ''}({column} = ANY({array}))"
    return f"{column} {_OPERATORS[node.op]} {params.add(converted[0], sql_type)}"


def _convert(value: Any, sql_type: str, node: Comparison) -> Any:
    """The Python value asyncpg expects for a parameter of sql_type."""
    if sql_type not in ("bigint", "smallint"):
        return value
    if not abs(value) < 2**63 or value != int(value):
        raise FilterError(node.ident.position, f"{node.ident.key} compares with an integer")
    return int(value)
