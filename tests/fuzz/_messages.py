"""Strategies for whole requests, read from the protobuf descriptors: any message of any
RPC, its bytes corrupted, and the message streams of client-streaming RPCs.

Nothing here names an RPC: a field's strategy follows from its type, and from its name
where the name says what it holds (filter, page_token, order_by, project, ids known to
the seeded server). A new RPC or field is fuzzed without a change here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from . import _values as values

F = FieldDescriptor
MAX_DEPTH = 2  # request -> submessage -> its submessages (Value, Timestamp)
_INTEGERS = {
    F.TYPE_INT32: values.INT32,
    F.TYPE_SINT32: values.INT32,
    F.TYPE_SFIXED32: values.INT32,
    F.TYPE_INT64: values.INT64,
    F.TYPE_SINT64: values.INT64,
    F.TYPE_SFIXED64: values.INT64,
    F.TYPE_UINT32: values.UINT32,
    F.TYPE_FIXED32: values.UINT32,
    F.TYPE_UINT64: values.UINT64,
    F.TYPE_FIXED64: values.UINT64,
}
# Wire type of each field type, for writing fields by hand.
_LENGTH_DELIMITED = {F.TYPE_STRING, F.TYPE_BYTES, F.TYPE_MESSAGE}
# Invalid UTF-8: a bad continuation, a lone continuation, overlong NUL, an encoded
# surrogate, past U+10FFFF, a truncated sequence, bytes never valid.
INVALID_UTF8 = (
    b"\xc3\x28",
    b"\xa0\xa1",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"abc\xe2\x82",
    b"\xff\xfe",
    b"ok\x00\xc3",
)


@dataclass(frozen=True)
class Known:
    """What the seeded server holds, by the field names that refer to it."""

    project: str
    by_field: Mapping[str, tuple[str, ...]]
    tokens: Mapping[str, values.RealToken]  # full method name -> a real next_page_token
    first_pages: Mapping[str, bytes]  # full method name -> the request of that token
    # request message name -> identifiers its filter accepted when probed
    filter_fields: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    def strings_for(self, name: str) -> tuple[str, ...]:
        return self.by_field.get(name, ())


Pair = tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]  # (plain, hostile)
# How many fields of one message get a hostile value: most calls have exactly one bad
# field, so they get past every other check to the code that handles that field.
HOSTILE_FIELDS = st.sampled_from([0, 1, 1, 1, 2])


class Messages:
    """Builds (and caches) the strategies of each message type."""

    def __init__(self, known: Known) -> None:
        self.known = known
        self._cache: dict[tuple[str, int, bool], st.SearchStrategy[Message]] = {}

    def of(
        self,
        descriptor: Descriptor,
        depth: int = 0,
        token: values.RealToken | None = None,
        hostile: bool = True,
    ) -> st.SearchStrategy[Message]:
        """Messages of descriptor's type: plain values, up to two fields hostile (none
        when not hostile)."""
        cache_key = (descriptor.full_name, depth, hostile)
        if token is None and cache_key in self._cache:
            return self._cache[cache_key]
        pairs = {}
        for field in descriptor.fields:
            pair = self._field(field, descriptor, depth, token)
            if pair is not None and field.name != "project":
                pair = (pair[0], values.weighted((4, pair[1]), (1, st.just(ABSENT))))
            if pair is not None:
                pairs[field.name] = pair
        cls = message_factory.GetMessageClass(descriptor)
        built = _message(cls, pairs, HOSTILE_FIELDS if hostile and pairs else st.just(0))
        if token is None:
            self._cache[cache_key] = built
        return built

    def focused(self, descriptor: Descriptor, name: str) -> st.SearchStrategy[Message]:
        """Plain messages with one field, `name`, hostile: the whole call is aimed at
        the code that reads that field."""
        field = descriptor.fields_by_name[name]
        pair = self._field(field, descriptor, 0, None)
        assert pair is not None, field.full_name
        cls = message_factory.GetMessageClass(descriptor)

        def aimed(drawn: tuple[Message, Any]) -> Message:
            message, value = drawn
            aimed = cls()
            aimed.CopyFrom(message)
            aimed.ClearField(name)
            aimed.MergeFrom(build(cls, {name: value}))
            return aimed

        return st.tuples(self.of(descriptor, hostile=False), pair[1]).map(aimed)

    def pair(self, field: FieldDescriptor, owner: Descriptor) -> Pair:
        """(plain, hostile) strategies of one scalar field of owner."""
        found = self._single(field, owner, 0, None)
        assert found is not None, field.full_name
        return found

    def _field(
        self, field: FieldDescriptor, owner: Descriptor, depth: int, token: values.RealToken | None
    ) -> Pair | None:
        if field.type == F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            entry = field.message_type
            key = self._single(entry.fields_by_name["key"], entry, depth + 1, None)
            value = self._single(entry.fields_by_name["value"], entry, depth + 1, None)
            if key is None or value is None:
                return None
            plain = st.tuples(key[0], value[0])
            bad = st.one_of(st.tuples(key[1], value[0]), st.tuples(key[0], value[1]))
            entries: list[tuple[int, st.SearchStrategy[Any]]] = [
                (2, st.lists(values.weighted((1, plain), (2, bad)), min_size=1, max_size=4))
            ]
            if entry.fields_by_name["key"].type == F.TYPE_STRING:
                many = st.tuples(value[0], st.sampled_from([257, 1001]))
                entries.append((1, many.map(lambda t: [(f"k{i}", t[0]) for i in range(t[1])])))
            return st.lists(plain, max_size=3), values.weighted(*entries)
        single = self._single(field, owner, depth, token)
        if single is None or not field.is_repeated:
            return single
        plain, hostile = single
        mixed = st.lists(values.weighted((2, plain), (1, hostile)), min_size=1, max_size=4)
        plain_list = values.weighted((3, st.lists(plain, min_size=1, max_size=3)), (1, st.just([])))
        if field.type == F.TYPE_MESSAGE:
            return plain_list, mixed
        # Long lists by repetition: hypothesis would draw each element of a long list.
        long = st.tuples(single[0], st.sampled_from([101, 1001, 5000])).map(lambda t: _repeated(*t))
        return plain_list, values.weighted((2, mixed), (1, long))

    def _single(
        self, field: FieldDescriptor, owner: Descriptor, depth: int, token: values.RealToken | None
    ) -> Pair | None:
        kind = field.type
        if kind == F.TYPE_MESSAGE:
            if depth >= MAX_DEPTH:
                return None
            if field.message_type.full_name == "google.protobuf.FieldMask":
                cls = message_factory.GetMessageClass(field.message_type)
                names = (*(f.name for f in owner.fields), "name", "id", "project")
                plain = st.lists(st.sampled_from(names), max_size=3)
                hostile = st.lists(values.strings(*names), min_size=1, max_size=4)
                return plain.map(lambda p: cls(paths=p)), hostile.map(lambda p: cls(paths=p))
            nested = field.message_type
            return self.of(nested, depth + 1, hostile=False), self.of(nested, depth + 1)
        if kind == F.TYPE_STRING:
            return self._string(field.name, owner, token)
        if kind == F.TYPE_BYTES:
            return st.just(b"hello"), values.binaries()
        if kind == F.TYPE_BOOL:
            return st.booleans(), st.booleans()
        if kind in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
            doubles = values.doubles(64 if kind == F.TYPE_DOUBLE else 32)
            return st.sampled_from([0.0, 1.5, -2.0, 3.0]), doubles
        if kind == F.TYPE_ENUM:
            plain = st.sampled_from([v.number for v in field.enum_type.values])
            return plain, values.integers(*values.INT32)
        if kind in _INTEGERS:
            return st.sampled_from([0, 1, 2, 5, 10]), values.integers(*_INTEGERS[kind])
        return None  # groups: none in proto3

    def _string(self, name: str, owner: Descriptor, token: values.RealToken | None) -> Pair:
        if name == "project":
            # Never "default" or another test's project: the fuzzer writes where it names.
            return st.just(self.known.project), values.strings(
                "no-such-project", self.known.project
            )
        if name == "filter":
            accepted = self.known.filter_fields.get(owner.full_name, ())
            usual = tuple(f"{ident} = 'x'" for ident in accepted) or values.PLAIN_FILTERS
            plain = values.weighted((3, st.just("")), (1, st.sampled_from(usual)))
            return plain, values.filters(accepted)
        if name == "page_token":
            plain = values.weighted((3, st.just("")), (1, st.just(token.sealed if token else "")))
            return plain, values.page_tokens(token)
        if name == "order_by":
            plain = values.weighted((3, st.just("")), (1, st.sampled_from(values.PLAIN_ORDERS)))
            return plain, values.order_bys()
        known = self.known.strings_for(name)
        if known:
            plain = values.weighted((4, st.sampled_from(known)), (1, FRESH), (1, st.just("")))
        else:
            plain = values.weighted(
                (2, st.just("")), (1, st.sampled_from(values.PLAIN_STRINGS)), (1, FRESH)
            )
        return plain, values.strings(*known)


ABSENT = object()  # a field left unset
# A name nothing has yet, so that creations can succeed.
FRESH = st.integers(0, 2**32).map(lambda n: f"fresh-{n}")


@st.composite
def _message(
    draw: st.DrawFn,
    cls: type[Message],
    pairs: Mapping[str, Pair],
    hostile_count: st.SearchStrategy[int],
) -> Message:
    """Every field set to a plain value (one member of each oneof, or none), except a
    few drawn hostile: a bad value or, for all but `project`, no value at all."""
    descriptor = cls.DESCRIPTOR
    names = list(pairs)
    count = min(draw(hostile_count), len(names))
    bad: list[str] = []  # a list: a set's order would change with the hash seed
    weighted_names = _by_interest(names)
    for _ in range(4 * count):  # a few draws may repeat a name
        if len(bad) < count and (name := draw(st.sampled_from(weighted_names))) not in bad:
            bad.append(name)
    chosen = {
        oneof.name: draw(st.sampled_from([None, *(f.name for f in oneof.fields for _ in "ab")]))
        for oneof in descriptor.oneofs
    }
    for name in bad:  # a hostile member of a oneof is the one set
        oneof = descriptor.fields_by_name[name].containing_oneof
        if oneof is not None:
            chosen[oneof.name] = name
    fields = {}
    for name in names:
        plain, hostile = pairs[name]
        oneof = descriptor.fields_by_name[name].containing_oneof
        if name in bad:
            value = draw(hostile)
        elif oneof is not None and chosen[oneof.name] != name:
            value = ABSENT
        else:
            value = draw(plain)
        if value is not ABSENT:
            fields[name] = value
    return build(cls, fields)


# Fields whose values the server parses or decodes itself, drawn hostile more often
# (and aimed at alone, see _probes.payloads).
INTERESTING = {"filter": 4, "page_token": 3, "order_by": 2}


def _by_interest(names: list[str]) -> list[str]:
    return [name for name in names for _ in range(INTERESTING.get(name, 1))]


def _repeated(value: Any, times: int) -> list[Any]:
    """value times times, or fewer times where that would pass 2 MB: a handful of
    oversized messages is enough to meet the size limit."""
    size = len(value) if isinstance(value, str | bytes) else 8
    return [value] * max(1, min(times, 2_000_000 // max(size, 1)))


def build(cls: type[Message], fields: Mapping[str, Any]) -> Message:
    """A message of cls with the given field values (maps as lists of pairs)."""
    message = cls()
    descriptor = cls.DESCRIPTOR
    for name, value in fields.items():
        field = descriptor.fields_by_name[name]
        target = getattr(message, name)
        if field.type == F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            entry_value = field.message_type.fields_by_name["value"]
            for key, item in value:
                if entry_value.type == F.TYPE_MESSAGE:
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif field.is_repeated:
            target.extend(value)
        elif field.type == F.TYPE_MESSAGE:
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


# --- Bytes on the wire ---------------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def string_paths(descriptor: Descriptor, depth: int = 0) -> list[tuple[int, ...]]:
    """Field-number paths to every string field, through singular submessages."""
    found: list[tuple[int, ...]] = []
    for field in descriptor.fields:
        if field.type == F.TYPE_STRING:
            found.append((field.number,))
        elif (
            field.type == F.TYPE_MESSAGE
            and depth < 2
            and not field.message_type.GetOptions().map_entry
        ):
            found += [(field.number, *p) for p in string_paths(field.message_type, depth + 1)]
    return found


def invalid_utf8(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    """A string field (at any depth) holding bytes that are not UTF-8, appended to a
    message that is otherwise valid, or standing alone."""
    paths = string_paths(descriptor)
    if not paths:
        return st.just(b"")

    def encode(path: tuple[int, ...], bad: bytes) -> bytes:
        payload = length_delimited(path[-1], bad)
        for number in reversed(path[:-1]):
            payload = length_delimited(number, payload)
        return payload

    return st.tuples(st.sampled_from(paths), st.sampled_from(INVALID_UTF8)).map(
        lambda t: encode(*t)
    )


# Whole fields that no well-formed message holds: a varint of 11 bytes, a length past
# the end, wire types 3/4 (groups) and 6/7 (none), field number 0, the highest number.
BROKEN_FIELDS = (
    b"\x08" + b"\xff" * 10 + b"\x01",
    b"\x12\x7f" + b"x",
    b"\x12\xff\xff\xff\xff\x0f",
    b"\x0b\x08\x01",
    b"\x0c",
    b"\x0e\x00",
    b"\x0f\x00",
    b"\x00\x00",
    b"\xf8\xff\xff\xff\x0f\x01",
    b"\x0d\x00",
    b"\x09\x00\x00",
    b"\x80",
)


@st.composite
def corrupted(draw: st.DrawFn, base: st.SearchStrategy[bytes], descriptor: Descriptor) -> bytes:
    """A serialized message with bytes flipped, cut, inserted or doubled, broken fields
    or invalid UTF-8 added."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        action = draw(
            st.sampled_from(["flip", "set", "cut", "insert", "delete", "double", "append", "utf8"])
        )
        if action == "flip" and data:
            spot = min(at, len(data) - 1)
            data[spot] ^= 1 << draw(st.integers(0, 7))
        elif action == "set" and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif action == "double":
            data[at:at] = data[max(0, at - 8) : at]
        elif action == "append":
            data += draw(st.sampled_from(BROKEN_FIELDS))
        else:
            data += draw(invalid_utf8(descriptor))
    return bytes(data)
