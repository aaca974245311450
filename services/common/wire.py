"""A request's lists counted from its bytes, before it is decoded.

Decoding makes every element of a list a whole value of its type, however little of it
the wire held: an empty element of a list of model versions, two bytes sent, became
about 240 bytes of memory, an empty string or a one-byte number 16 or 8. So one 16 MiB
request took up to 1.9 GB before any check could count its lists (messages.py), and
before its caller was even authenticated. The lists of a large request are counted here
first, with the request checks' limits, by a walk of its tags that stops as soon as one
is passed: each list at most its element limit, and the messages, strings and enums of
all of them together at most the walked limit (numbers count against their own list).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

# Below this a request is decoded without counting: its lists cost a few MB at most.
COUNTED_FROM_BYTES = 64 * 1024
# More fields than a request of ours holds (a full LogBatch about 102,000: its metric
# keys, params and tags), each walked in Python: bounds the walk at about a quarter of a
# second, where 16 MiB of two-byte fields took 10 s of the loop every call shares.
MAX_FIELDS = 200_000
# Deeper than any message of ours nests; protobuf's own decoder stops at 100.
_MAX_DEPTH = 32
_VARINT, _FIXED64, _LENGTH_DELIMITED, _START_GROUP, _END_GROUP, _FIXED32 = range(6)
_FIXED_BYTES = {_FIXED64: 8, _FIXED32: 4}
_TYPE = FieldDescriptor
# Each element of a packed list of these takes this many bytes; other numbers are varints.
_PACKED_WIDTH = {
    _TYPE.TYPE_DOUBLE: 8,
    _TYPE.TYPE_FIXED64: 8,
    _TYPE.TYPE_SFIXED64: 8,
    _TYPE.TYPE_FLOAT: 4,
    _TYPE.TYPE_FIXED32: 4,
    _TYPE.TYPE_SFIXED32: 4,
}
_WALKED = (_TYPE.TYPE_STRING, _TYPE.TYPE_ENUM, _TYPE.TYPE_MESSAGE)
# The types whose every value is length-delimited; of another type, a list is packed.
_DELIMITED = (_TYPE.TYPE_STRING, _TYPE.TYPE_BYTES, _TYPE.TYPE_MESSAGE)
# The bytes of a varint but its last: deleted, what is left counts the varints.
_CONTINUED = bytes(range(0x80, 0x100))

ElementLimit = Callable[[Descriptor, FieldDescriptor], int]


class Unreadable(Exception):
    """Bytes that are no message: the decoder would refuse them too."""


class TooMany(Exception):
    """A list holds more elements than its limit (field is its name), or the lists
    together more than the walked limit, or the request more than MAX_FIELDS fields
    (field None, and what counted)."""

    def __init__(self, field: str | None, limit: int, counted: str = "elements") -> None:
        super().__init__(field, limit)
        self.field = field
        self.limit = limit
        self.counted = counted


def check(data: bytes, descriptor: Descriptor, limit_of: ElementLimit, most_walked: int) -> None:
    """Raises TooMany when data, a message of descriptor's type, holds a list past its
    limit_of(message type, field), or more than most_walked messages, strings and enums
    in its lists together; Unreadable when it is no message. Requests under
    COUNTED_FROM_BYTES are not looked at."""
    if len(data) < COUNTED_FROM_BYTES:
        return
    walk = _Walk(memoryview(data), limit_of, most_walked)
    try:
        walk.fields(0, len(data), descriptor, "", {})
    except IndexError:
        raise Unreadable("the request ends inside a field") from None


class _Walk:
    def __init__(self, data: memoryview, limit_of: ElementLimit, most_walked: int) -> None:
        self.data = data
        self.limit_of = limit_of
        self.most_walked = self.walked_left = most_walked
        self.fields_left = MAX_FIELDS

    def fields(
        self,
        pos: int,
        end: int,
        descriptor: Descriptor | None,
        path: str,
        counts: dict[Any, Any],
        group: int = 0,
    ) -> int:
        """Walks the fields in data[pos:end] of a message at path ("" for the request,
        else its field names, each followed by a dot; descriptor None: of an unknown
        group, which ends at its end tag); the position past them. counts holds the
        elements of the message's lists so far: the decoder merges the copies of a
        singular message sent several times, whose lists then add up."""
        if path.count(".") > _MAX_DEPTH:
            raise Unreadable("fields nest too deep")
        while pos < end:
            self.fields_left -= 1
            if self.fields_left < 0:
                raise TooMany(None, MAX_FIELDS, "fields")
            tag, pos = _varint(self.data, pos)
            number, wire_type = tag >> 3, tag & 7
            if wire_type == _END_GROUP:
                if number != group or not group:
                    raise Unreadable("a group ends that did not begin")
                return pos
            start, pos = self._value(pos, end, wire_type, number, path)
            field = None if descriptor is None else descriptor.fields_by_number.get(number)
            if field is not None and (field.is_repeated or field.message_type is not None):
                assert descriptor is not None  # a field is one of a message's
                self._element(field, descriptor, wire_type, start, pos, counts, path)
        if pos != end or group:
            raise Unreadable("a field runs past its message")
        return pos

    def _value(self, pos: int, end: int, wire_type: int, number: int, path: str) -> tuple[int, int]:
        """Where the value of a field begins, and ends."""
        if wire_type == _VARINT:
            return pos, _varint(self.data, pos)[1]
        if wire_type in _FIXED_BYTES:
            return pos, pos + _FIXED_BYTES[wire_type]
        if wire_type == _LENGTH_DELIMITED:
            length, start = _varint(self.data, pos)
            return start, start + length
        if wire_type == _START_GROUP:  # no field of ours is one: kept whole, as unknown
            return pos, self.fields(pos, end, None, f"{path}{number}.", {}, group=number)
        raise Unreadable(f"wire type {wire_type} is none")

    def _element(
        self,
        field: FieldDescriptor,
        descriptor: Descriptor,
        wire_type: int,
        start: int,
        end: int,
        counts: dict[Any, Any],
        path: str,
    ) -> None:
        """Counts a field's value: its elements, against its list's limit and, for
        messages, strings and enums, the walked limit; a message's own lists too."""
        is_message = field.message_type is not None
        if is_message and wire_type != _LENGTH_DELIMITED:
            return  # not this field's encoding: the decoder keeps it aside, as unknown
        elements = 1
        packed = wire_type == _LENGTH_DELIMITED and field.type not in _DELIMITED
        if packed:
            elements = _packed(self.data[start:end], field.type)
        if field.is_repeated:
            counts[field.number] = counts.get(field.number, 0) + elements
            limit = self.limit_of(descriptor, field)
            if counts[field.number] > limit:
                raise TooMany(path + field.name, limit)
        if field.is_repeated and field.type in _WALKED:
            self.walked_left -= elements
            if self.walked_left < 0:
                raise TooMany(None, self.most_walked)
        if is_message and _nests(field.message_type):
            # An element of a list is a message of its own; copies of a singular one merge.
            inner = {} if field.is_repeated else counts.setdefault(("in", field.number), {})
            self.fields(start, end, field.message_type, f"{path}{field.name}.", inner)


def _packed(values: memoryview, field_type: int) -> int:
    """How many numbers a packed list's bytes hold."""
    width = _PACKED_WIDTH.get(field_type)
    if width is not None:
        return len(values) // width
    return len(values.tobytes().translate(None, _CONTINUED))  # one last byte a varint


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    byte = data[pos]
    if byte < 0x80:  # most tags and lengths
        return byte, pos + 1
    value, shift = byte & 0x7F, 7
    while True:
        pos += 1
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + 1
        shift += 7
        if shift > 63:
            raise Unreadable("a varint runs past ten bytes")


@functools.cache
def _nests(descriptor: Descriptor) -> bool:
    """Whether messages of this type hold anything counted: a list or a message."""
    return any(f.is_repeated or f.message_type is not None for f in descriptor.fields)
