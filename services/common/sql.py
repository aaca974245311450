"""Small helpers for building parameterized SQL: values never enter statement text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Params:
    """Collects query arguments and hands out their $n placeholders."""

    def __init__(self, *initial: Any) -> None:
        self.values: list[Any] = list(initial)

    def add(self, value: Any, cast: str = "") -> str:
        self.values.append(value)
        placeholder = f"${len(self.values)}"
        return f"{placeholder}::{cast}" if cast else placeholder


def keyset_after(
    columns: Sequence[tuple[str, bool, str]], last: Sequence[Any], params: Params
) -> str:
    """A predicate true for rows whose sort key comes strictly after `last`.

    Args:
        columns: (SQL expression, ascending, SQL type) per sort column, the last one unique.
        last: the values of those columns in the last row of the previous page.
        params: where the values go.

    NULLs compare equal to NULLs (IS NOT DISTINCT FROM) and never greater or smaller, so
    callers put NULL-able values behind a "missing" flag column that orders them.
    """
    if len(columns) != len(last):
        raise ValueError("page key does not match the sort columns")
    placeholders = [
        params.add(value, sql_type) for value, (_, _, sql_type) in zip(last, columns, strict=True)
    ]
    alternatives = []
    for i, (expr, ascending, _) in enumerate(columns):
        equal_before = [f"{columns[j][0]} IS NOT DISTINCT FROM {placeholders[j]}" for j in range(i)]
        step = f"{expr} {'>' if ascending else '<'} {placeholders[i]}"
        alternatives.append("(" + " AND ".join([*equal_before, step]) + ")")
    return "(" + " OR ".join(alternatives) + ")"
