"""Keyset page tokens: what a token may hold, checked before any of it reaches SQL."""

import base64
import datetime
import json
import uuid
from typing import Any

import pytest

from cairn_server.common.errors import InvalidArgument
from cairn_server.common.paging import Keyset, SortColumn
from cairn_server.common.sql import Params

_COLUMNS = [
    SortColumn("q.m0", True, "int", "m0"),
    SortColumn("q.v0", False, "double precision", "v0", nullable=True),
    SortColumn("q.t", True, "timestamptz", "t"),
    SortColumn("q.tiebreak", True, "uuid", "tiebreak"),
]
_ROW: dict[str, Any] = {
    "m0": 0,
    "v0": 0.5,
    "t": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
    "tiebreak": uuid.UUID(int=7),
}


def _token(keyset: Keyset) -> str:
    return keyset.next_token([_ROW, _ROW], 1)


def _forged(token: str, key: object) -> str:
    payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    payload["k"] = key
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


def _refused(keyset: Keyset, token: str) -> str:
    with pytest.raises(InvalidArgument) as raised:
        keyset.last(token)
    assert raised.value.reason == "INVALID_PAGE_TOKEN"
    return raised.value.message


def test_a_token_reads_back_typed() -> None:
    keyset = Keyset(_COLUMNS, "runs", "p")
    assert keyset.last(_token(keyset)) == [0, 0.5, _ROW["t"], _ROW["tiebreak"]]
    assert keyset.last("") is None
    # A nullable column's null (the value a run lacks) reads back.
    lacking = [0, None, _ROW["t"].isoformat(), str(_ROW["tiebreak"])]
    assert keyset.last(_forged(_token(keyset), lacking)) == [0, None, _ROW["t"], _ROW["tiebreak"]]
    assert keyset.next_token([_ROW], 1) == ""  # nothing follows the last page


@pytest.mark.parametrize(
    "key",
    [
        [1],  # the key of another sort order
        [0, 0.5, "2026-01-02T03:04:05+00:00", "not-a-uuid"],
        ["0", 0.5, "2026-01-02T03:04:05+00:00", str(uuid.UUID(int=7))],
        [True, 0.5, "2026-01-02T03:04:05+00:00", str(uuid.UUID(int=7))],
        [2**40, 0.5, "2026-01-02T03:04:05+00:00", str(uuid.UUID(int=7))],
        [0, "0.5", "2026-01-02T03:04:05+00:00", str(uuid.UUID(int=7))],
        [0, 0.5, "2026-01-02T03:04:05", str(uuid.UUID(int=7))],  # no time zone
        [0, 0.5, "yesterday", str(uuid.UUID(int=7))],
        # In range as written, out of it in UTC, which asyncpg converts to.
        [0, 0.5, "0001-01-01T00:00:00+05:00", str(uuid.UUID(int=7))],
        [0, 0.5, "9999-12-31T23:59:59-05:00", str(uuid.UUID(int=7))],
        [0, 0.5, "2026-01-02T03:04:05+00:00", {"$gt": 1}],
        [None, 0.5, "2026-01-02T03:04:05+00:00", str(uuid.UUID(int=7))],  # never NULL
        [0, 0.5, None, str(uuid.UUID(int=7))],
        "not a list",
    ],
)
def test_an_edited_key_is_an_invalid_page_token(key: object) -> None:
    keyset = Keyset(_COLUMNS, "runs", "p")
    _refused(keyset, _forged(_token(keyset), key))


def test_a_token_of_another_query_or_mangled_is_refused() -> None:
    token = _token(Keyset(_COLUMNS, "runs", "p"))
    assert "different query" in _refused(Keyset(_COLUMNS, "runs", "other-project"), token)
    for mangled in ("%%%", "eyJxIjogMX0", token[:-3], "A" * 5000, base64.b64encode(b"[]").decode()):
        _refused(Keyset(_COLUMNS, "runs", "p"), mangled)


def test_after_compares_the_whole_key_in_order() -> None:
    keyset = Keyset(_COLUMNS[:2], "q")
    params = Params()
    sql = keyset.after([1, 2.0], params)
    assert sql == (
        "((q.m0 > $1::int) OR (q.m0 IS NOT DISTINCT FROM $1::int AND q.v0 < $2::double precision))"
    )
    assert params.values == [1, 2.0]


def _encoded(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 3000,  # json.loads raised RecursionError (INTERNAL)
        b'{"q": "x", "k": ' + b"[" * 1400 + b"]" * 1400 + b"}",
    ],
)
def test_a_deeply_nested_token_is_malformed(raw: bytes) -> None:
    keyset = Keyset(_COLUMNS, "runs", "p")
    assert "malformed" in _refused(keyset, _encoded(raw))


def test_a_text_value_that_is_not_utf8_is_refused() -> None:
    """A lone surrogate survives JSON ("\\ud800") but no UTF-8 encoder: asyncpg failed
    to send it (INTERNAL)."""
    keyset = Keyset([SortColumn("q.v", True, "text", "v"), _COLUMNS[0]], "runs", "p")
    token = keyset.next_token([{"v": "b", "m0": 1}] * 2, 1)
    assert keyset.last(token) == ["b", 1]
    for value in ("\ud800", "ok\udfff", "\ud83d"):
        assert "wrong type" in _refused(keyset, _forged(token, [value, 1]))
    assert keyset.last(_forged(token, ["\U0001f600", 1])) == ["\U0001f600", 1]


def test_a_runs_token_holds_the_longest_sort_values_the_search_allows() -> None:
    """Tag values as long as they may be, of the characters JSON takes most bytes for,
    in as many order terms as a search may have: the token reads back."""
    from cairn_server.tracking.store import search
    from cairn_server.tracking.validation import MAX_TAG_VALUE_LENGTH

    orders = [f"tags.t{n} DESC" for n in range(search.MAX_ORDER_TERMS)]
    terms = [search.parse_order(text) for text in orders]
    keyset = Keyset(search._sort_key(terms), max_token_length=search.MAX_TOKEN_LENGTH)
    longest = {f"v{n}": "\x01" * MAX_TAG_VALUE_LENGTH for n in range(len(terms))}
    ranks = {f"m{n}": 0 for n in range(len(terms))}
    row = {**longest, **ranks, "start_time": -(2**63), "tiebreak": uuid.UUID(int=7)}
    token = keyset.next_token([row, row], 1)
    assert len(token) <= search.MAX_TOKEN_LENGTH
    last = keyset.last(token)
    assert last is not None
    assert last[1] == longest["v0"]
