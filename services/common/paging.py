"""Keyset paging, the one way every list RPC pages.

A page token holds the sort key of the last row of a page and a fingerprint of the query
(filter, order, scope) it belongs to. The next page starts strictly after that key, so
rows inserted meanwhile never shift a page the way OFFSET does.

Tokens travel sealed (page_seals.py: the interceptor signs and checks them), so what
reaches this module was made by it. Every value read back from one is still checked
against the type of its sort column (and the query's fingerprint) before it reaches
SQL, and the query keeps its own scope conditions: a seal leaked with its key would
let an edited token at most start a page elsewhere in what the caller may read anyway.
A token that fails a check is INVALID_ARGUMENT (INVALID_PAGE_TOKEN).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from .errors import InvalidArgument, invalid_field
from .sql import Params

MAX_TOKEN_LENGTH = 4096
T = TypeVar("T")
U = TypeVar("U")
# What a list response holds: messages, and the plain strings of some (folded prefixes).
M = TypeVar("M", bound=Message | str)
_INT_RANGES = {"smallint": 2**15, "int": 2**31, "bigint": 2**63}
_TYPES = {*_INT_RANGES, "double precision", "text", "uuid", "timestamptz"}
# What a page of a list or a search loads at most, counted as each service counts its
# items' sizes: twice what the default largest message holds, so that the cut to a
# message is what shortens a page, and a page of the largest items costs tens of MiB,
# not GiBs. Services bound a page's entries too (tags, properties ...): short entries
# cost far more as objects than as text.
MAX_PAGE_LOAD_BYTES = 32 * 1024 * 1024


@dataclass
class Page(Generic[T]):
    """One page of a list; next_page_token is empty on the last page."""

    items: list[T]
    next_page_token: str


@dataclass(frozen=True)
class ListPage(Generic[T]):
    """One page of a list, which may be cut shorter (to fit in one response).

    Attributes:
        items: the page's items.
        next_page_token: the token of the next page; empty when none follows.
        token_after: the token of the page that follows the first n items (n less
            than len(items)).
    """

    items: list[T]
    next_page_token: str
    token_after: Callable[[int], str]

    def of(self, items: list[U]) -> ListPage[U]:
        """The same page holding items (the converted items, in order)."""
        return ListPage(items, self.next_page_token, self.token_after)

    def first(self, count: int) -> ListPage[T]:
        """The page cut to its first count items (at least one), continued after them."""
        if count >= len(self.items):
            return self
        count = max(count, 1)
        return ListPage(self.items[:count], self.token_after(count), self.token_after)


# Room a list response keeps beside its items for framing and its next page token (a
# few kB); a search of runs counts its token as made (tracking's fitting_runs).
RESPONSE_RESERVE = 64 * 1024


def fitting(items: Sequence[Message | str], budget: int) -> int:
    """How many of items, from the first, a response's repeated fields hold in budget
    bytes (each costs its size and at most 6 bytes of tag and length); at least one."""
    total = 0
    for count, item in enumerate(items):
        total += _response_bytes(item)
        if total > budget:
            return max(count, 1)
    return len(items)


def fitted(page: ListPage[T], to_message: Callable[[T], M], budget: int) -> tuple[list[M], str]:
    """The page's items as messages, cut before the first that would take the response
    past budget bytes; the token then continues at that item. A page of legal objects
    is always readable, one object at least. Items are converted one by one up to the
    cut: those past it are never converted."""
    messages: list[M] = []
    total = 0
    for item in page.items:
        message = to_message(item)
        total += _response_bytes(message)
        if total > budget and messages:
            return messages, page.first(len(messages)).next_page_token
        messages.append(message)
    return messages, page.next_page_token


def _response_bytes(item: Message | str) -> int:
    """What an item takes in a response's repeated field: its size and at most 6 bytes
    of tag and length."""
    return (len(item.encode()) if isinstance(item, str) else item.ByteSize()) + 6


@dataclass(frozen=True)
class SortColumn:
    """One column of a unique sort key.

    Attributes:
        expression: its SQL over the rows the query orders.
        ascending: its direction.
        sql_type: smallint, int, bigint, double precision, text, uuid or timestamptz.
        name: the result column holding its value, read to make the next token.
        nullable: whether a row may hold NULL there (a token may then hold null).
    """

    expression: str
    ascending: bool
    sql_type: str
    name: str
    nullable: bool = False

    def __post_init__(self) -> None:
        if self.sql_type not in _TYPES:
            raise ValueError(f"page tokens cannot hold {self.sql_type} values")


class Keyset:
    """The paging of one query: reads its token, and writes the next from a page's rows.

    Args:
        columns: the sort key, the last column unique.
        query: everything that defines the query's rows and order (kind, scope,
            filter, order); a token of another query is refused.
    """

    def __init__(
        self, columns: Sequence[SortColumn], *query: Any, max_token_length: int = MAX_TOKEN_LENGTH
    ) -> None:
        self.columns = tuple(columns)
        self.max_token_length = max_token_length
        text = json.dumps(query, sort_keys=True, default=str)
        self._fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]

    def last(self, token: str, field: str = "page_token") -> list[Any] | None:
        """The typed sort key a token ends at; None for an empty token (the first page)."""
        if not token:
            return None
        payload = _payload(token, field, self.max_token_length)
        if payload.get("q") != self._fingerprint:
            raise bad_token(field, "belongs to a different query (filter, order or scope)")
        key = payload.get("k")
        if not isinstance(key, list) or len(key) != len(self.columns):
            raise bad_token(field, "does not match the query's sort key")
        try:
            return [_typed(value, c) for value, c in zip(key, self.columns, strict=True)]
        except (TypeError, ValueError, OverflowError):
            raise bad_token(field, "holds a value of the wrong type") from None

    def after(self, last: Sequence[Any], params: Params, skip: int = 0) -> str:
        """A predicate true for rows whose sort key comes strictly after `last`; skip: the
        key's first columns, which hold one value on every row the query reads, left out.

        NULLs compare equal to NULLs (IS NOT DISTINCT FROM) and never greater or smaller,
        so queries put NULL-able values behind a "missing" flag column that orders them.
        """
        columns = self.columns[skip:]
        placeholders = [
            params.add(value, c.sql_type) for value, c in zip(last[skip:], columns, strict=True)
        ]
        alternatives = []
        for i, column in enumerate(columns):
            equal_before = [
                f"{columns[j].expression} IS NOT DISTINCT FROM {placeholders[j]}" for j in range(i)
            ]
            step = f"{column.expression} {'>' if column.ascending else '<'} {placeholders[i]}"
            alternatives.append("(" + " AND ".join([*equal_before, step]) + ")")
        return "(" + " OR ".join(alternatives) + ")"

    def condition(self, token: str, params: Params) -> str:
        """`after` for a token's key, or TRUE on the first page."""
        last = self.last(token)
        return "TRUE" if last is None else self.after(last, params)

    def bounded_condition(self, token: str, params: Params, skip: int = 0) -> str:
        """`condition`, with the first column bounded by the token's value as well, for
        sort keys whose columns are never NULL: implied by `after`'s OR of comparisons,
        and what an index on that column serves, so a later page starts where its token
        is instead of testing every row before it. skip: as `after`'s."""
        last = self.last(token)
        if last is None:
            return "TRUE"
        first = self.columns[skip]
        bound = f"{first.expression} {'>=' if first.ascending else '<='} "
        value = params.add(last[skip], first.sql_type)
        return f"{bound}{value} AND {self.after(last, params, skip)}"

    def page(self, rows: Sequence[Any], page_size: int, convert: Callable[[Any], T]) -> Page[T]:
        """The first page_size of rows (the query fetched one more to know if more
        follow), converted, with the token of the next page."""
        return Page([convert(row) for row in rows[:page_size]], self.next_token(rows, page_size))

    def next_token(self, rows: Sequence[Any], page_size: int) -> str:
        """The token of the page after rows[:page_size]; empty when no row follows."""
        if len(rows) <= page_size:
            return ""
        return self.token_after(rows[page_size - 1])

    def token_after(self, row: Any) -> str:
        """The token of the page that begins after row."""
        key = [_json_safe(row[c.name]) for c in self.columns]
        # Characters as UTF-8 rather than escaped: a long sort value makes a shorter token.
        payload = json.dumps(
            {"q": self._fingerprint, "k": key}, separators=(",", ":"), ensure_ascii=False
        )
        return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def page_size(requested: int, default: int, maximum: int, field: str = "page_size") -> int:
    if requested < 0:
        raise invalid_field(field, "must not be negative")
    if requested > maximum:
        raise invalid_field(field, f"must be at most {maximum}")
    return requested or default


def _payload(token: str, field: str, max_length: int) -> dict[str, Any]:
    if len(token) > max_length:
        raise bad_token(field, "is too long")
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, RecursionError):  # Recursion: nested too deep
        raise bad_token(field, "is malformed") from None
    if not isinstance(payload, dict):
        raise bad_token(field, "is malformed")
    return payload


def _typed(value: Any, column: SortColumn) -> Any:
    """value as the Python type asyncpg sends for the column's type; raises if it is not
    one (or is null, where the column is never NULL: code reading a token's key need not
    expect None there)."""
    if value is None:
        if not column.nullable:
            raise ValueError("null")
        return None
    sql_type = column.sql_type
    if sql_type in _INT_RANGES:
        if type(value) is not int or not -_INT_RANGES[sql_type] <= value < _INT_RANGES[sql_type]:
            raise ValueError("not an integer of the column's range")
        return value
    if sql_type == "double precision":
        if type(value) not in (int, float) or math.isnan(value):
            raise ValueError("not a number")
        return float(value)
    if type(value) is not str or "\x00" in value:
        raise ValueError("not a string")
    # JSON carries lone surrogates ("\ud800"), which no UTF-8 encoder (asyncpg's) takes;
    # UnicodeEncodeError is a ValueError.
    value.encode()
    if sql_type == "uuid":
        return uuid.UUID(value)
    if sql_type == "timestamptz":
        moment = datetime.datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError("no time zone")
        # As asyncpg sends it: a moment of year 1 or 9999 may be out of range in UTC
        # (OverflowError), where asyncpg would fail the statement.
        return moment.astimezone(datetime.UTC)
    return value


def _json_safe(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def bad_token(field: str, problem: str) -> InvalidArgument:
    return invalid_field(field, f"page token {problem}", "INVALID_PAGE_TOKEN")
