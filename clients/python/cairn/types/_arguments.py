"""Arguments the client reads before it sends anything. A bad one raises what the
server answers a bad field with, `InvalidArgumentError` (a ValueError too) naming the
argument, so that a caller catching `CairnError` catches it as well."""

from __future__ import annotations

import enum
from typing import TypeVar

from ..exceptions import InvalidArgumentError

E = TypeVar("E", bound=enum.Enum)


def invalid_argument(argument: str, problem: str) -> InvalidArgumentError:
    """The error for a bad argument, worded as the server words a bad field."""
    return InvalidArgumentError(
        f"{argument}: {problem}", reason="INVALID_ARGUMENT", field_violations=[(argument, problem)]
    )


def member(kind: type[E], value: object, argument: str) -> E:
    """value as a member of kind, by kind's own lookup (with the names and any case it
    accepts); anything else is an InvalidArgumentError listing what it takes."""
    try:
        return kind(value)
    except ValueError:
        raise invalid_argument(argument, f"{value!r} is not one of {_choices(kind)}") from None


def _choices(kind: type[enum.Enum]) -> str:
    # A string enum is written as its values ("Staging"), a number's with its numbers
    # (ALL (3), as MLflow's callers pass them), another as its names; aliases (ML cube's
    # PROJECT_VIEW) are names in every case.
    canonical = [_choice(m) for m in kind]
    aliases = [name for name, m in kind.__members__.items() if m.name != name]
    return ", ".join([*canonical, *aliases])


def _choice(known: enum.Enum) -> str:
    if isinstance(known, str):
        return str(known.value)
    return f"{known.name} ({known.value})" if isinstance(known, int) else known.name
