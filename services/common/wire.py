"""A request's messages counted from its bytes, before it is decoded.

Decoding makes every sub-message a whole struct of its type, however little of it the
wire held: an empty element of a list of model versions, two bytes sent, became about
240 bytes of memory, so one 16 MiB request of them took 1.9 GB before any check could
count its lists (messages.py), and before its caller was even authenticated. The
sub-messages of a large request are counted here first, a walk of its tags that stops
as soon as there are more than a request may hold.
"""

from __future__ import annotations

import functools

from google.protobuf.descriptor import Descriptor

# Below this a request is decoded without counting: at most about 32,000 sub-messages,
# a few MB.
COUNTED_FROM_BYTES = 64 * 1024
# Deeper than any message of ours nests; protobuf's own decoder stops at 100.
_MAX_DEPTH = 32
_LENGTH_DELIMITED, _VARINT, _FIXED64, _FIXED32 = 2, 0, 1, 5


class _TooMany(Exception):
    pass


def holds_at_most(data: bytes, descriptor: Descriptor, most: int) -> bool:
    """Whether data, a message of descriptor's type, holds at most `most` sub-messages
    (map entries too). Bytes that break off, or are no message, before that many are
    counted as within: decoding them says what is wrong."""
    if len(data) < COUNTED_FROM_BYTES:
        return True
    try:
        _count(memoryview(data), 0, len(data), descriptor, most, 0)
    except _TooMany:
        return False
    except (IndexError, ValueError):  # truncated or malformed
        return True
    return True


def _count(
    data: memoryview, pos: int, end: int, descriptor: Descriptor, left: int, depth: int
) -> int:
    """left less the sub-messages in data[pos:end]; raises _TooMany below zero."""
    if depth > _MAX_DEPTH:
        raise ValueError("nested too deep")
    fields = descriptor.fields_by_number
    while pos < end:
        tag, pos = _varint(data, pos)
        wire_type = tag & 7
        if wire_type == _LENGTH_DELIMITED:
            length, pos = _varint(data, pos)
            field = fields.get(tag >> 3)
            if field is not None and field.message_type is not None:
                left -= 1
                if left < 0:
                    raise _TooMany()
                if _nests(field.message_type):
                    left = _count(data, pos, pos + length, field.message_type, left, depth + 1)
            pos += length
        elif wire_type == _VARINT:
            _, pos = _varint(data, pos)
        elif wire_type in (_FIXED64, _FIXED32):
            pos += 8 if wire_type == _FIXED64 else 4
        else:  # groups, which proto3 has none of, or no wire type at all
            raise ValueError("unexpected wire type")
    if pos != end:
        raise ValueError("a field runs past its message")
    return left


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
            raise ValueError("varint too long")


@functools.cache
def _nests(descriptor: Descriptor) -> bool:
    """Whether messages of this type can hold messages."""
    return any(field.message_type is not None for field in descriptor.fields)
