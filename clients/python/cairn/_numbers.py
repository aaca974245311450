"""Numbers of a request's fields, checked before a call: protobuf's own error for an
integer past the field's bits ("Value out of range") is a bare ValueError naming no
parameter, and `float()` would read a number out of a string."""

from __future__ import annotations

import operator
from typing import Any

from ._argument_error import invalid_argument


def whole(value: Any, name: str, bits: int = 64) -> int:
    """value as a signed integer of bits bits, else InvalidArgumentError naming name."""
    if is_bool(value):  # an int to Python, never a number meant
        raise invalid_argument(name, f"{value!r} is no integer")
    try:
        number = operator.index(value)
    except TypeError:
        raise invalid_argument(name, f"{value!r} is no integer") from None
    limit = 1 << (bits - 1)
    if not -limit <= number < limit:
        raise invalid_argument(name, f"{number} does not fit in {bits} bits")
    return number


def whole_or_zero(value: Any, name: str, bits: int = 64) -> int:
    """whole(value), 0 for None (a step, a limit or a time not given): `value or 0`
    read False and "" as 0 too."""
    return whole(0 if value is None else value, name, bits)


def real(value: Any, name: str) -> float:
    """value as a float (any number, numpy's included, but no string: MLflow refuses a
    metric of "1.5"), else InvalidArgumentError naming name."""
    try:
        if isinstance(value, str | bytes):
            raise TypeError
        return float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: 10**400, say
        raise invalid_argument(name, f"{value!r} is no number") from None


def seconds(value: Any, name: str) -> float:
    """value as a duration of 0 or more seconds (inf: no end), else InvalidArgumentError
    naming name: NaN, which no comparison holds, passed every check of `< 0`."""
    number = None if is_bool(value) else real(value, name)
    if number is None or not number >= 0:
        raise invalid_argument(name, f"{value!r} is no number of seconds of 0 or more")
    return number


def is_bool(value: Any) -> bool:
    """A bool, Python's or numpy's (told by its dtype: numpy is no dependency here)."""
    return isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b"
