"""A probe: one hostile call of one RPC — who calls (headers) and the bytes sent."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass

from google.protobuf import message_factory, text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from hypothesis import strategies as st

from cairn_server.common import page_seals

from . import _messages as messages
from . import _values as values
from ._rpc import Metadata, Rpc


@dataclass(frozen=True)
class Keys:
    admin: str
    viewer: str


@dataclass(frozen=True)
class Probe:
    caller: str  # admin, viewer, anonymous or forged
    metadata: Metadata
    payload: tuple[bytes, ...]  # one message, or the messages of a client stream
    kind: str  # how it was made: message, corrupted, utf8, token, filter, stream...

    def describe(self, rpc: Rpc) -> str:
        """The probe as a person reads it: the decoded message where it decodes."""
        shown = [_show(rpc, part) for part in self.payload] or ["<empty stream>"]
        headers = [f"{k}: {v[:40]}" for k, v in self.metadata if k != "authorization"]
        return f"[{self.caller}, {self.kind}{', ' if headers else ''}{', '.join(headers)}] " + (
            " | ".join(shown)
        )


def _show(rpc: Rpc, part: bytes) -> str:
    cls = message_factory.GetMessageClass(rpc.request)
    try:
        decoded: Message = cls.FromString(part)
    except DecodeError:
        return f"bytes {_clip(part.hex(' '), 240)}"
    text = text_format.MessageToString(decoded, as_one_line=True, as_utf8=True)
    shown = "{" + _clip(_clip_fields(text), 600) + "}"
    token = getattr(decoded, "page_token", "")
    if token:
        with contextlib.suppress(ValueError):
            bare = token.rpartition(page_seals.SEPARATOR)[0] or token
            shown += f" (page_token decodes to {json.dumps(values.decode_token(bare))[:300]})"
    return shown


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"


def _clip_fields(text: str) -> str:
    """Long runs of one character (a 70,000-character boundary string) read as a count."""
    out, i = [], 0
    while i < len(text):
        j = i
        while j < len(text) and text[j] == text[i]:
            j += 1
        out.append(text[i:j] if j - i < 24 else f"{text[i]!r}*{j - i}")
        i = j
    return "".join(out)


def callers(keys: Keys) -> st.SearchStrategy[tuple[str, Metadata]]:
    """Mostly the admin (so calls reach the handlers), sometimes a viewer, nobody, or
    a forged key; with request-id headers now and then, some of them reused."""
    # The admin's key with its last character changed: a valid prefix, a wrong secret.
    wrong_secret = keys.admin[:-1] + ("B" if keys.admin.endswith("A") else "A")
    who = st.sampled_from(
        [("admin", (("authorization", f"Bearer {keys.admin}"),))] * 12
        + [("viewer", (("x-api-key", keys.viewer),))] * 2
        + [("anonymous", ())]
        + [("forged", (("x-api-key", wrong_secret),))]
        + [("forged", (("authorization", "Bearer cairn_0123456789ab_x"),))]
        + [("forged", (("authorization", f"Bearer {keys.admin}"), ("x-api-key", keys.viewer)))]
    )
    header_text = st.text(
        st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_.:"), min_size=0, max_size=140
    )
    extra = values.weighted(
        (6, st.just(())),
        (1, st.tuples(st.just("x-request-id"), header_text).map(lambda h: (h,))),
        (
            1,
            st.tuples(st.just("x-cairn-request-id"), st.sampled_from(["r1", "r2", "r3"])).map(
                lambda h: (h,)
            ),
        ),
        (1, st.tuples(st.just("x-cairn-request-id"), header_text).map(lambda h: (h,))),
    )
    return st.tuples(who, extra).map(lambda t: (t[0][0], t[0][1] + t[1]))


def payloads(
    rpc: Rpc, build: messages.Messages
) -> st.SearchStrategy[tuple[str, tuple[bytes, ...]]]:
    """(kind, payload) for one RPC: messages, corrupted bytes, invalid UTF-8, forged
    page tokens; for a client stream, a stream of such messages."""
    if rpc.client_streaming:
        return _streams(rpc, build)
    token = build.known.tokens.get(rpc.path)
    message = build.of(rpc.request, token=token).map(lambda m: m.SerializeToString())
    options = [
        (10, st.tuples(st.just("message"), message)),
        (2, st.tuples(st.just("corrupted"), messages.corrupted(message, rpc.request))),
        (1, st.tuples(st.just("utf8"), _with_invalid_utf8(message, rpc.request))),
    ]
    for name in ("filter", "order_by"):
        if name in rpc.request.fields_by_name:
            aimed = build.focused(rpc.request, name).map(lambda m: m.SerializeToString())
            options.append((messages.INTERESTING[name], st.tuples(st.just(name), aimed)))
    first_page = build.known.first_pages.get(rpc.path)
    if first_page is not None and token:
        # The very request the real token answered, so the fingerprint matches and the
        # forged key itself is what the server must check.
        forged = values.page_tokens(token).map(lambda t: first_page + _token_field(rpc, t))
        options.append((3, st.tuples(st.just("token"), forged)))
    return values.weighted(*options).map(lambda t: (t[0], (t[1],)))


def _token_field(rpc: Rpc, token: str) -> bytes:
    """The page_token field on the wire (a later field replaces an earlier one)."""
    number = rpc.request.fields_by_name["page_token"].number
    return messages.length_delimited(number, token.encode("utf-8", "surrogatepass"))


def _with_invalid_utf8(
    message: st.SearchStrategy[bytes], descriptor: Descriptor
) -> st.SearchStrategy[bytes]:
    return st.tuples(message, messages.invalid_utf8(descriptor)).map(lambda t: t[0] + t[1])


def _streams(
    rpc: Rpc, build: messages.Messages
) -> st.SearchStrategy[tuple[str, tuple[bytes, ...]]]:
    """A stream whose parts each set one member of the request's oneof: in the
    protocol's order (first part, middle parts, last part) or in any order, with
    corrupted messages among them."""
    cls = message_factory.GetMessageClass(rpc.request)
    fields = rpc.request.fields
    part = build.of(rpc.request).map(lambda m: m.SerializeToString())

    def only(field: FieldDescriptor) -> st.SearchStrategy[bytes]:
        if field.type == field.TYPE_MESSAGE:
            value = build.of(field.message_type, depth=1)
        else:
            plain, hostile = build.pair(field, rpc.request)
            value = values.weighted((3, plain), (1, hostile))
        return value.map(lambda v: cls(**{field.name: v}).SerializeToString())

    first, last = only(fields[0]), only(fields[-1])
    middle = [only(f) for f in fields[1:-1]] or [first]
    ordered = st.tuples(first, st.lists(st.one_of(middle), max_size=4), last).map(
        lambda t: (t[0], *t[1], t[2])
    )
    shuffled = st.lists(st.one_of(part, messages.corrupted(part, rpc.request)), max_size=5)
    corrupted = st.tuples(ordered, st.integers(0, 5), messages.corrupted(part, rpc.request))
    return values.weighted(
        (4, st.tuples(st.just("stream"), ordered)),
        (1, st.tuples(st.just("stream-any-order"), shuffled.map(tuple))),
        (
            1,
            st.tuples(
                st.just("stream-corrupted"),
                corrupted.map(lambda t: (*t[0][: t[1]], t[2], *t[0][t[1] :])),
            ),
        ),
    )


def probes(rpc: Rpc, build: messages.Messages, keys: Keys) -> st.SearchStrategy[Probe]:
    return st.tuples(callers(keys), payloads(rpc, build)).map(
        lambda t: Probe(t[0][0], t[0][1], t[1][1], t[1][0])
    )
