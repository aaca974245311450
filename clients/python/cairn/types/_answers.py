"""Reading what a server answers into the client's types."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from ..exceptions import UnknownError

T = TypeVar("T")


def known(members: Mapping[Any, T], number: int, field: str) -> T:
    """The member an enum field's wire number stands for (members are keyed by the
    wire enum's values, ints to Python, typed apart to mypy).

    Raises:
        UnknownError: UNKNOWN_VALUE, for a number members lack: a newer server's value
            (a state added since), which raised a KeyError or ValueError naming nothing
            a caller could act on.
    """
    try:
        return members[number]
    except KeyError:
        raise UnknownError(
            f"the server answered {field} {number}, which this client does not know: "
            "a newer server's, most likely; upgrade cairn",
            reason="UNKNOWN_VALUE",
        ) from None
