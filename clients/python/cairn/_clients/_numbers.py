"""Integers of a request's fields, checked before a call: protobuf's own error for one
past the field's bits ("Value out of range") is a bare ValueError naming no parameter."""

from __future__ import annotations

import operator
from typing import Any

from ..exceptions import InvalidArgumentError


def whole(value: Any, name: str, bits: int = 64) -> int:
    """value as a signed integer of bits bits, else InvalidArgumentError naming name."""
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
