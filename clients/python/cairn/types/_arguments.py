"""Arguments the client reads before it sends anything. A bad one raises what the
server answers a bad field with, `InvalidArgumentError` (a ValueError too) naming the
argument, so that a caller catching `CairnError` catches it as well."""

from __future__ import annotations

import contextlib
import enum
import numbers
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from .._argument_error import invalid_argument

E = TypeVar("E", bound=enum.Enum)
M = TypeVar("M", bound=Message)
P = ParamSpec("P")


def proto(message: Callable[P, M], /, *args: P.args, **fields: P.kwargs) -> M:
    """message(**fields), the message a call sends; a field given a value of the wrong
    type (a run id as 5, a tag's key as 1) is an InvalidArgumentError naming the field,
    where protobuf's own TypeError ("bad argument type for built-in operation") names
    none; so is an integer past its field's bits (protobuf's ValueError, "Value out of
    range"). message is positional only (a field may be named `kind`), and mypy checks
    the fields against it as against a call of it."""
    try:
        return message(*args, **fields)
    except (TypeError, ValueError):
        alone: Callable[..., M] = message
        for name, value in fields.items():  # only on failure: which one, alone, fails
            try:
                alone(**{name: value})
            except TypeError:
                field = alone.DESCRIPTOR.fields_by_name[name]  # type: ignore[attr-defined]
                raise invalid_argument(name, f"{value!r} is no {_wanted(field)}") from None
            except ValueError:
                raise invalid_argument(name, f"{value!r} does not fit its field") from None
        raise


def _wanted(field: FieldDescriptor) -> str:
    if field.message_type is not None:
        single = field.message_type.name
    elif field.enum_type is not None:
        single = field.enum_type.name
    else:
        single = _SCALARS.get(field.cpp_type, "value")
    return f"list of {single}" if field.is_repeated else single


_SCALARS = {
    FieldDescriptor.CPPTYPE_STRING: "string",
    FieldDescriptor.CPPTYPE_BOOL: "boolean",
    FieldDescriptor.CPPTYPE_DOUBLE: "number",
    FieldDescriptor.CPPTYPE_FLOAT: "number",
    FieldDescriptor.CPPTYPE_INT32: "integer",
    FieldDescriptor.CPPTYPE_INT64: "integer",
    FieldDescriptor.CPPTYPE_UINT32: "integer",
    FieldDescriptor.CPPTYPE_UINT64: "integer",
}


def member(kind: type[E], value: object, argument: str) -> E:
    """value as a member of kind, by kind's own lookup (with the names and any case it
    accepts); anything else is an InvalidArgumentError listing what it takes, a boolean
    or a float too (True, 1.0), though it equals a member's number."""
    if not _only_equals_a_number(value):
        with contextlib.suppress(ValueError):
            return kind(value)
    raise invalid_argument(argument, f"{value!r} is not one of {_choices(kind)}")


def _only_equals_a_number(value: object) -> bool:
    """Whether value is a boolean or a number of another kind than integers: True and 1.0
    equal 1, and a lookup by value would take them for the member numbered 1."""
    return isinstance(value, bool) or (
        isinstance(value, numbers.Number) and not isinstance(value, numbers.Integral)
    )


def named(kind: type[E], value: object) -> E | None:
    """The member of kind whose name value is, in any case ("all", "thirty_days"): an
    enum's _missing_ for names where its values are numbers."""
    return kind.__members__.get(value.strip().upper()) if isinstance(value, str) else None


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
