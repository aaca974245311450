"""The one way the client refuses an argument it checks itself: the error the server
answers a bad field with, `InvalidArgumentError` (a ValueError too) with reason
INVALID_ARGUMENT and the argument in `field_violations`, so that a caller reads the
argument from the error whichever side refused it. Kept below `types` and `_clients`,
which both raise it, so that neither imports the other for it."""

from __future__ import annotations

from .exceptions import InvalidArgumentError


def invalid_argument(argument: str, problem: str) -> InvalidArgumentError:
    """The error for a bad argument, worded as the server words a bad field."""
    return InvalidArgumentError(
        f"{argument}: {problem}", reason="INVALID_ARGUMENT", field_violations=[(argument, problem)]
    )
