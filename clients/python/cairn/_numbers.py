"""Numbers of a request's fields, checked before a call: protobuf's own error for an
integer past the field's bits ("Value out of range") is a bare ValueError naming no
parameter, and `float()` would read a number out of a string."""

from __future__ import annotations

import operator
from typing import Any

from .exceptions import InvalidArgumentError


def whole(value: Any, name: str, bits: int = 64) -> int:
    """value as a signed integer of bits bits, else InvalidArgumentError naming name."""
    if is_bool(value):  # an int to Python, never a number meant
        raise InvalidArgumentError(f"{name}: {value!r} is no integer", reason="INVALID_ARGUMENT")
    try:
        number = operator.index(value)
    except TypeError:
        raise InvalidArgumentError(
            f"{name}: {value!r} is no integer", reason="INVALID_ARGUMENT"
        ) from None
    limit = 1 << (bits - 1)
    if not -limit <= number < limit:
        raise InvalidArgumentError(
            f"{name}: {number} does not fit in {bits} bits", reason="INVALID_ARGUMENT"
        )
    return number


def real(value: Any, name: str) -> float:
    """value as a float (any number, numpy's included, but no string: MLflow refuses a
    metric of "1.5"), else InvalidArgumentError naming name."""
    try:
        if isinstance(value, str | bytes):
            raise TypeError
        return float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: 10**400, say
        raise InvalidArgumentError(
            f"{name}: {value!r} is no number", reason="INVALID_ARGUMENT"
        ) from None


def is_bool(value: Any) -> bool:
    """A bool, Python's or numpy's (told by its dtype: numpy is no dependency here)."""
    return isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b"
