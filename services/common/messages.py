"""What every request is checked for before any handler runs, whatever its method.

A request must decode as its method's message, every string in it must be one
PostgreSQL can store (no NUL) and of a bounded length, every enum must hold one of
its values (proto3 keeps unknown numbers, which no column or handler expects), and no
list or map may hold more elements than any request needs.
Field-specific rules (names, keys, sizes) stay with the services; these are the ones no
handler should have to remember.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from . import wire
from .errors import FieldViolation, InvalidArgument, invalid_field

# A backstop far above any field's own limit: a string of a 16 MiB message is bounded
# anyway, but no field needs more than this.
MAX_STRING_CHARS = 1024 * 1024
# No list or map of a request needs more elements than this (the largest elsewhere are
# a LogBatch's 1,000 params or tags and CompleteUploadTicket's 2,000 part ETags, within
# S3's 10,000 parts); counted with len() before anything iterates one,
# since walking each element costs microseconds of the loop that serves every call.
MAX_ELEMENTS = 10_000
# The lists of these message types may be longer: a LogBatch's metric columns carry up
# to tracking's MAX_METRICS_PER_BATCH points (a test keeps the two equal).
WIDE_ELEMENTS = {"cairn.tracking.v1.MetricColumns": 100_000}
# Lists nest, so each being short does not make a request short: this bounds the
# strings, enums, messages and map entries of all its lists together (a LogBatch's
# metric keys, params and tags come to at most 102,000). Lists of numbers are never
# walked, so only their own limits count them.
MAX_WALKED_ELEMENTS = 150_000
# A refused client should half-close at once; one that keeps sending, or sends nothing
# and keeps its stream open, is cut off here.
REFUSED_DRAIN = 64
REFUSED_DRAIN_SECONDS = 5.0


class Malformed:
    """Stands in for a request whose bytes did not decode, so that the call reaches
    the interceptor (and its log line and error details) instead of failing inside
    gRPC with UNKNOWN and a traceback."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


def request_type(method: str) -> Descriptor | None:
    """The request message type of a method ("/package.Service/Method"); None for one
    the descriptor pool does not describe."""
    try:
        found = descriptor_pool.Default().FindMethodByName(method.lstrip("/").replace("/", "."))
    except KeyError:
        return None
    return found.input_type


class Oversized:
    """Stands in for a request whose bytes hold a list longer than its limit, or more
    elements in all its lists than MAX_WALKED_ELEMENTS, or more fields than
    wire.MAX_FIELDS, left undecoded: decoding it could cost gigabytes, walking it
    seconds (wire.py)."""

    def __init__(self, excess: wire.TooMany) -> None:
        self.excess = excess


class Unread:
    """A request of wire.COUNTED_FROM_BYTES or more, its bytes kept until its caller is
    known to hold a key: counting its lists (wire.py) takes the loop every call shares
    up to a quarter of a second, which 20 requests of 400 KB from a caller without one
    spent, holding every other call 1.5 to 4 s."""

    def __init__(self, data: bytes, read: Callable[[bytes], Any]) -> None:
        self._data = data
        self._read = read

    def read(self) -> Any:
        """The request as `tolerant` reads it: decoded, Oversized or Malformed."""
        return self._read(self._data)


def unread_refusal() -> InvalidArgument:
    """The refusal of a large request to a method open to every caller, left unread."""
    return InvalidArgument(
        "INVALID_ARGUMENT",
        f"a request of this method is never {wire.COUNTED_FROM_BYTES} bytes or more",
        metadata={"limit": str(wire.COUNTED_FROM_BYTES)},
    )


def decoded(request: Any) -> Any:
    """request as a handler takes it: an Unread one read now."""
    return request.read() if isinstance(request, Unread) else request


def tolerant(
    deserialize: Callable[[bytes], Any], descriptor: Descriptor | None = None
) -> Callable[[bytes], Any]:
    """deserialize, returning Malformed for bytes that are not a valid message, and
    Oversized, without decoding, for a message of descriptor's type whose lists pass
    their limits (counted on the wire, wire.py). A message of descriptor's type that
    is large enough to be counted is left Unread, for the interceptor to read once its
    caller is authenticated."""

    def read(data: bytes) -> Any:
        if descriptor is not None:
            try:
                wire.check(data, descriptor, _element_limit, MAX_WALKED_ELEMENTS)
            except wire.TooMany as excess:
                return Oversized(excess)
            except wire.Unreadable as problem:
                return Malformed(str(problem))
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError, or what a corrupt message raises instead
            return Malformed(type(exc).__name__)

    def read_later(data: bytes) -> Any:
        if descriptor is not None and len(data) >= wire.COUNTED_FROM_BYTES:
            return Unread(data, read)
        return read(data)

    return read_later


def check_decoded(request: Any) -> None:
    """Raises INVALID_ARGUMENT unless request decoded (at no cost): MALFORMED_MESSAGE,
    or the refusal of lists too long in all for one that was not decoded."""
    if isinstance(request, Oversized):
        excess = request.excess
        if excess.field is not None:
            raise _too_many(excess.field, None, excess.limit)
        if excess.counted == "fields":
            raise InvalidArgument(
                "INVALID_ARGUMENT",
                f"the request holds more than {excess.limit} fields (a list of numbers "
                "sent unpacked counts one a number; proto3 encoders pack them)",
                metadata={"limit": str(excess.limit)},
            )
        raise _OverBudget()
    if isinstance(request, Malformed):
        raise InvalidArgument(
            "MALFORMED_MESSAGE",
            f"the request is not a valid message of this method ({request.problem})",
        )


def check(request: Any) -> None:
    """Raises INVALID_ARGUMENT unless request decoded and all its values can be stored."""
    check_decoded(request)
    if isinstance(request, Message) and not _clean(request, _Budget()):
        # Only a refused request pays for the paths that name what is wrong in it (a
        # list that is too long raises from inside _values, before it is iterated).
        for path, value, enum in _values(request, "", _Budget()):
            if enum is not None:
                if value not in enum.values_by_number:
                    raise invalid_field(path, f"{value} is not a value of {enum.name}")
            elif "\x00" in value:
                raise invalid_field(path, "must not contain NUL characters", "INVALID_STRING")
            elif len(value) > MAX_STRING_CHARS:
                raise invalid_field(
                    path, f"must be at most {MAX_STRING_CHARS} characters", "INVALID_STRING"
                )


def _fits(value: Any, enum: EnumDescriptor | None) -> bool:
    if enum is not None:
        return value in enum.values_by_number
    return "\x00" not in value and len(value) <= MAX_STRING_CHARS


def _too_many(path: str, count: int | None, limit: int) -> InvalidArgument:
    """The refusal of a list past its limit; count None when it was not counted to its
    end (on the wire)."""
    got = "more" if count is None else str(count)
    description = f"must hold at most {limit} elements, got {got}"
    counted = {} if count is None else {"count": str(count)}
    return InvalidArgument(
        "INVALID_ARGUMENT",
        f"{path}: {description}",
        metadata={"field": path, "limit": str(limit), **counted},
        violations=[FieldViolation(path, description)],
    )


class _OverBudget(InvalidArgument):
    """A request whose lists hold too many elements in all: no one field is at fault,
    and naming where the count ran out would cost walking it all again."""

    def __init__(self) -> None:
        super().__init__(
            "INVALID_ARGUMENT",
            f"the lists and maps of the request hold more than {MAX_WALKED_ELEMENTS} "
            "elements in all",
            metadata={"limit": str(MAX_WALKED_ELEMENTS)},
        )


class _Budget:
    """How many elements the walked lists of a request may still hold."""

    def __init__(self) -> None:
        self.left = MAX_WALKED_ELEMENTS

    def spend(self, kind: str, count: int) -> None:
        """Raises _OverBudget once the lists walked so far hold too many in all."""
        if kind != "counted":
            self.left -= count
            if self.left < 0:
                raise _OverBudget()


def _clean(message: Message, budget: _Budget) -> bool:
    """Whether every string and enum set in message passes and no list is too long,
    found without naming the path of each (check() then names the one that does not):
    half the time or less."""
    for field, kind, limit in _plan(message.DESCRIPTOR):
        value = getattr(message, field.name)
        if limit:
            if len(value) > limit:
                return False
            budget.spend(kind, len(value))
        if kind == "scalar":
            if not _fits(value, field.enum_type):
                return False
        elif kind == "scalars":
            if not all(_fits(v, field.enum_type) for v in value):
                return False
        elif kind == "map":
            if not _clean_entries(field, value, budget):
                return False
        elif kind == "message":
            if message.HasField(field.name) and not _clean(value, budget):
                return False
        elif kind == "messages" and not all(_clean(item, budget) for item in value):
            return False
    return True


def _clean_entries(field: FieldDescriptor, entries: Any, budget: _Budget) -> bool:
    key_field, value_field = field.message_type.fields  # a map entry's two fields
    if key_field.type == FieldDescriptor.TYPE_STRING and not all(
        _fits(key, None) for key in entries
    ):
        return False
    if value_field.type == FieldDescriptor.TYPE_MESSAGE:
        return all(_clean(item, budget) for item in entries.values())
    if _checked_scalar(value_field):
        return all(_fits(item, value_field.enum_type) for item in entries.values())
    return True


Checked = tuple[str, Any, EnumDescriptor | None]


def _values(message: Message, prefix: str, budget: _Budget) -> Iterator[Checked]:
    """(field path, value, its enum or None for a string) of every string and enum set
    in message, nested ones included; raises on a list too long to walk."""
    for field, kind, limit in _plan(message.DESCRIPTOR):
        name = f"{prefix}{field.name}"
        value = getattr(message, field.name)
        if limit and len(value) > limit:
            raise _too_many(name, len(value), limit)
        if limit:
            budget.spend(kind, len(value))
        if kind == "scalar":
            yield name, value, field.enum_type
        elif kind == "scalars":
            yield from ((f"{name}[{i}]", v, field.enum_type) for i, v in enumerate(value))
        elif kind == "map":
            yield from _entries(field, name, value, budget)
        elif kind == "message":
            if message.HasField(field.name):
                yield from _values(value, f"{name}.", budget)
        elif kind == "messages":
            for i, item in enumerate(value):
                yield from _values(item, f"{name}[{i}].", budget)


def _entries(field: FieldDescriptor, name: str, entries: Any, budget: _Budget) -> Iterator[Checked]:
    value_field = field.message_type.fields_by_name["value"]
    for key, item in entries.items():
        if isinstance(key, str):
            yield f"{name}.key", key, None
        if value_field.type == FieldDescriptor.TYPE_MESSAGE:
            yield from _values(item, f"{name}[{key!r}].", budget)
        elif _checked_scalar(value_field):
            yield f"{name}[{key!r}]", item, value_field.enum_type


@functools.cache
def _plan(descriptor: Descriptor) -> tuple[tuple[FieldDescriptor, str, int], ...]:
    """The fields of a message type that can hold strings, enums or lists, how to reach
    them, and how many elements each may hold (0 for a field that is not a list)."""
    plan = []
    for field in descriptor.fields:
        limit = _element_limit(descriptor, field)
        if _checked_scalar(field):
            plan.append((field, "scalars" if field.is_repeated else "scalar", limit))
        elif field.type == FieldDescriptor.TYPE_MESSAGE and _walked(field.message_type):
            if field.message_type.GetOptions().map_entry:
                plan.append((field, "map", limit))
            else:
                plan.append((field, "messages" if field.is_repeated else "message", limit))
        elif field.is_repeated:  # numbers, bytes or plain messages: only counted
            plan.append((field, "counted", limit))
    return tuple(plan)


def _element_limit(descriptor: Descriptor, field: FieldDescriptor) -> int:
    if not field.is_repeated:
        return 0
    return WIDE_ELEMENTS.get(descriptor.full_name, MAX_ELEMENTS)


def _checked_scalar(field: FieldDescriptor) -> bool:
    return field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_ENUM)


def _walked(descriptor: Descriptor, seen: frozenset[str] = frozenset()) -> bool:
    """Whether a message type holds a string, an enum or a list, itself or nested."""
    if descriptor.full_name in seen:  # a recursive type: its other fields decide
        return False
    inner = seen | {descriptor.full_name}
    return any(
        _checked_scalar(f)
        or f.is_repeated
        or (f.type == FieldDescriptor.TYPE_MESSAGE and _walked(f.message_type, inner))
        for f in descriptor.fields
    )


async def drain(requests: AsyncIterator[Any], most: int | None = REFUSED_DRAIN) -> None:
    """Reads what a refused client still sends (at most `most` messages, None: any
    number, for at most REFUSED_DRAIN_SECONDS) until it half-closes: an answer that
    overtakes the client's writes reaches it as INTERNAL instead of the refusal."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(REFUSED_DRAIN_SECONDS):
            read = 0
            while most is None or read < most:
                if await anext(requests, None) is None:
                    return
                read += 1
