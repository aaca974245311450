"""What every request is checked for before any handler runs, whatever its method.

A request must decode as its method's message, and every string in it must be one
PostgreSQL can store (no NUL) and of a bounded length. Field-specific rules (names,
keys, sizes) stay with the services; these are the ones no handler should have to
remember.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from .errors import InvalidArgument, invalid_field

# A backstop far above any field's own limit: a string of a 16 MiB message is bounded
# anyway, but no field needs more than this.
MAX_STRING_CHARS = 1024 * 1024


class Malformed:
    """Stands in for a request whose bytes did not decode, so that the call reaches
    the interceptor (and its log line and error details) instead of failing inside
    gRPC with UNKNOWN and a traceback."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


def tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """deserialize, returning Malformed for bytes that are not a valid message."""

    def read(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError, or what a corrupt message raises instead
            return Malformed(type(exc).__name__)

    return read


def check(request: Any) -> None:
    """Raises INVALID_ARGUMENT unless request decoded and all its strings can be stored."""
    if isinstance(request, Malformed):
        raise InvalidArgument(
            "MALFORMED_MESSAGE",
            f"the request is not a valid message of this method ({request.problem})",
        )
    if isinstance(request, Message):
        for path, value in _strings(request, ""):
            if "\x00" in value:
                raise invalid_field(path, "must not contain NUL characters", "INVALID_STRING")
            if len(value) > MAX_STRING_CHARS:
                raise invalid_field(
                    path, f"must be at most {MAX_STRING_CHARS} characters", "INVALID_STRING"
                )


def _strings(message: Message, prefix: str) -> Iterator[tuple[str, str]]:
    """(field path, value) of every string set in message, nested ones included."""
    for field, kind in _plan(message.DESCRIPTOR):
        name = f"{prefix}{field.name}"
        value = getattr(message, field.name)
        if kind == "string":
            yield name, value
        elif kind == "strings":
            yield from ((f"{name}[{i}]", v) for i, v in enumerate(value))
        elif kind == "map":
            for key, item in value.items():
                if isinstance(key, str):
                    yield f"{name}.key", key
                if isinstance(item, str):
                    yield f"{name}[{key!r}]", item
                elif isinstance(item, Message):
                    yield from _strings(item, f"{name}[{key!r}].")
        elif kind == "message":
            if message.HasField(field.name):
                yield from _strings(value, f"{name}.")
        else:
            for i, item in enumerate(value):
                yield from _strings(item, f"{name}[{i}].")


@functools.cache
def _plan(descriptor: Descriptor) -> tuple[tuple[FieldDescriptor, str], ...]:
    """The fields of a message type that can hold strings, and how to reach them."""
    plan = []
    for field in descriptor.fields:
        repeated = field.is_repeated
        if field.type == FieldDescriptor.TYPE_STRING:
            plan.append((field, "strings" if repeated else "string"))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            entry = field.message_type
            if entry.GetOptions().map_entry:
                if any(_holds_strings(f) for f in entry.fields):
                    plan.append((field, "map"))
            elif _holds_strings_type(entry, set()):
                plan.append((field, "messages" if repeated else "message"))
    return tuple(plan)


def _holds_strings(field: FieldDescriptor) -> bool:
    if field.type == FieldDescriptor.TYPE_STRING:
        return True
    return field.type == FieldDescriptor.TYPE_MESSAGE and _holds_strings_type(
        field.message_type, set()
    )


def _holds_strings_type(descriptor: Descriptor, seen: set[str]) -> bool:
    if descriptor.full_name in seen:  # recursive types: the first visit decides
        return False
    seen.add(descriptor.full_name)
    return any(
        f.type == FieldDescriptor.TYPE_STRING
        or (f.type == FieldDescriptor.TYPE_MESSAGE and _holds_strings_type(f.message_type, seen))
        for f in descriptor.fields
    )
