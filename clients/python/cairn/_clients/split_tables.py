"""Tables stored in pandas' split orientation (`{"columns": [...], "data": [[...], ...]}`)
by log_table: read back checked, combined as `pd.concat` combines them, written as
strict JSON. Plain Python: pandas is never required."""

from __future__ import annotations

import json
import math
import reprlib
from typing import Any

from .._argument_error import invalid_argument
from ..exceptions import FailedPreconditionError


def parse_table(data: bytes, artifact_file: str, run_id: str) -> dict[str, Any]:
    """The table a stored file holds.

    Raises:
        FailedPreconditionError: the file is no table in the split orientation (not
            JSON, no list `columns`, no list `data` of rows as long as `columns`),
            reason INVALID_TABLE.
    """
    try:
        table = json.loads(data)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deep
        table = None
    if not _is_split(table):
        raise FailedPreconditionError(
            f"run {run_id} has {artifact_file!r}, which is no table in pandas' split "
            'orientation ({"columns": [...], "data": [[...], ...]}, each row as long as '
            "the columns): log the table under another name",
            reason="INVALID_TABLE",
            metadata={"run_id": run_id, "artifact_file": artifact_file},
        )
    return table


def _is_split(table: Any) -> bool:
    if not isinstance(table, dict):
        return False
    columns, rows = table.get("columns"), table.get("data")
    if not isinstance(columns, list) or not isinstance(rows, list):
        return False
    return all(isinstance(row, list) and len(row) == len(columns) for row in rows)


def append(first: dict[str, Any], second: dict[str, Any], artifact_file: str) -> dict[str, Any]:
    """Rows of both, under the union of their columns (missing cells None), as pd.concat.

    Raises:
        InvalidArgumentError: a column name given to two columns of either table, the
            tables' columns not the same (pd.concat raises too: combined by name, only
            one cell of each name would be kept).
    """
    if first["columns"] == second["columns"]:  # by position: duplicate names kept apart
        return {"columns": list(first["columns"]), "data": [*first["data"], *second["data"]]}
    if _duplicated(first["columns"]) or _duplicated(second["columns"]):
        raise invalid_argument(
            "artifact_file",
            f"{artifact_file!r}: duplicate column names cannot be combined: columns "
            f"{reprlib.repr(first['columns'])} with {reprlib.repr(second['columns'])}",
        )
    columns = list(first["columns"]) + [c for c in second["columns"] if c not in first["columns"]]
    rows = []
    for table in (first, second):
        # A JSON column name may be a list, which no dict can hold as a key.
        at = [table["columns"].index(c) if c in table["columns"] else None for c in columns]
        rows += [[None if i is None else row[i] for i in at] for row in table["data"]]
    return {"columns": columns, "data": rows}


def _duplicated(columns: list[Any]) -> bool:
    try:
        return len(set(columns)) < len(columns)
    except TypeError:  # a list as a name
        return any(columns.index(c) != i for i, c in enumerate(columns))


def table_json(table: dict[str, Any]) -> bytes:
    """The table as JSON, with a NaN or infinite float cell as null, as pandas' to_json
    writes it: Python's NaN and Infinity are no JSON, and MLflow's UI reads the file
    with JSON.parse. The cells are walked only when the C encoder has met such a
    float (or a dict key JSON has no text for), so a table without one costs one
    encoding, as before.

    Raises:
        InvalidArgumentError: a cell that cannot be written even so (one holding itself,
            lists nested past the interpreter's stack).
    """
    try:
        return json.dumps(table, default=str, allow_nan=False).encode()
    except (ValueError, TypeError, RecursionError):
        pass
    try:
        return json.dumps(_cleaned(table), default=str, allow_nan=False).encode()
    except (ValueError, RecursionError) as error:
        raise invalid_argument("data", f"a cell cannot be written as JSON: {error}") from error


def _cleaned(value: Any) -> Any:
    """value with every non-finite float in it (a cell, a list or dict in a cell) None,
    and each dict key JSON has no text for as its text. Loops, not comprehensions: one
    frame a level, as the C encoder takes one, so what it nests it can clean."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        items = []
        for item in value:
            items.append(_cleaned(item))
        return items
    if isinstance(value, dict):
        entries = {}
        for key, item in value.items():
            entries[_key(key)] = _cleaned(item)
        return entries
    return value


def _key(key: Any) -> Any:
    """A dict key as JSON can write it: a non-finite float as the text json gives it
    ("NaN", "-Infinity"), a key of another type (a tuple) as its str."""
    if isinstance(key, float) and not math.isfinite(key):
        return json.dumps(key)
    return key if key is None or isinstance(key, str | int | float) else str(key)
