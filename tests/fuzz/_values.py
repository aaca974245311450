"""Hostile field values: boundary and random strings, numbers, filters and page tokens.

Each strategy mixes a fixed list of boundary values (drawn often, since a random draw
rarely lands on `2**63 - 1` or a NUL) with hypothesis' own random values.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from hypothesis import strategies as st

from cairn_server.common import page_seals


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each drawn in proportion to its weight. st.one_of folds a
    strategy given twice into one, and flattens a one_of among its options into its own
    (which would weigh each by its number of options, a map of it too): every copy is
    a one-tuple of its own, unpacked."""
    pool = [
        st.tuples(strategy).map(lambda one: one[0])
        for weight, strategy in choices
        for _ in range(weight)
    ]
    return pool[0] if len(pool) == 1 else st.one_of(pool)


INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)

# Strings a service must refuse or store exactly, never choke on. Surrogates are left
# out: a protobuf string cannot hold one (they arrive as invalid UTF-8, see _messages).
BOUNDARY_STRINGS = (
    "",
    " ",
    "a",
    "\x00",
    "a\x00b",
    "\x00" * 64,
    "\t\n\r\x0b\x0c",
    "\x1b[31mred\x1b[0m",
    "\x7f\x80\x9f",
    "\u0085\u2028\u2029",
    "\ufeff\u200b\u200e\u202e",
    "\ufffd\uffff\U0010ffff",
    "é",
    "日本語",
    "🙂" * 3,
    "Z\u0351\u0352\u0353",
    "'",
    '"',
    "`",
    "\\",
    "%",
    "_",
    "%_%\\%",
    "'; DROP TABLE runs; --",
    "' OR '1'='1",
    "../../etc/passwd",
    "/",
    "a/../b",
    "a//b",
    "./a",
    "a/",
    "C:\\x",
    "${jndi:ldap://127.0.0.1/x}",
    "{{7*7}}",
    "null",
    "NaN",
    "-1",
    "0",
    "9" * 40,
    " leading",
    "trailing ",
)
# Long strings by (text, times): sampled_from shows its values in reprs, and a
# 70,000-character value there costs more than the fuzzing.
LONG_STRINGS = tuple(
    [("a", n) for n in (63, 64, 65, 128, 129, 250, 251, 256, 257, 1024, 1025, 4096, 4097)]
    + [("a", 70_000), ("é", 3000), ("🙂", 2000), ("\x00", 5000)]
)

NUL_STRINGS = ("\x00", "a\x00b", "\x00" * 64, "x\x00")
# What a surrogate-free UTF-8 string can hold, control characters included.
ANY_CHARACTER = st.characters(codec="utf-8")
CONTROL_CHARACTER = st.characters(categories=["Cc", "Cf", "Zl", "Zp"])


def strings(*known: str) -> st.SearchStrategy[str]:
    """Boundary strings, random text, and values the server knows with bad endings."""
    options = [
        (2, st.sampled_from(BOUNDARY_STRINGS)),
        # NUL is what PostgreSQL cannot store: drawn apart, so it is drawn often.
        (1, st.sampled_from(NUL_STRINGS)),
        (1, st.sampled_from(LONG_STRINGS).map(lambda t: t[0] * t[1])),
        (1, st.text(ANY_CHARACTER, max_size=40)),
        (1, st.text(st.one_of(CONTROL_CHARACTER, st.sampled_from("ab/._-")), max_size=12)),
    ]
    if known:
        options.append(
            (
                1,
                st.tuples(
                    st.sampled_from(known), st.sampled_from(BOUNDARY_STRINGS[:10] + NUL_STRINGS)
                ).map(lambda pair: pair[0] + pair[1]),
            )
        )
    return weighted(*options)


# Values a field of that name plausibly holds when the server has none to offer.
PLAIN_STRINGS = ("x", "fuzz-1", "a.b_c", "data/new.txt", "v1", "Model One")


def integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [low, high, 0, 1, -1, 2, 4, 10, 20, 100, 101, 1000, 1001, 100_000, 2**31 - 1]
    edges += [2**31, 2**32, 2**53, 2**53 + 1, 10**12, 253402300799, 253402300800, 2**63 - 1]
    edges += [low + 1, high - 1, -(2**31), -(2**53), -62135596800, -62135596801]
    inside = sorted({e for e in edges if low <= e <= high})
    return weighted(
        (1, st.sampled_from([low, high, -1] if low < 0 else [low, high])),
        (2, st.sampled_from(inside)),
        (1, st.integers(low, high)),
    )


def doubles(width: Literal[16, 32, 64] = 64) -> st.SearchStrategy[float]:
    edges = [0.0, -0.0, math.nan, math.inf, -math.inf, 0.5, -1.0, 5e-324, 2.0**63, 2.0**64]
    edges += [1.7976931348623157e308, -1.7976931348623157e308, 1e-310]
    if width == 32:
        edges = [e for e in edges if math.isnan(e) or math.isinf(e) or abs(e) < 3.4e38]
        edges = [e for e in edges if e == 0 or math.isinf(e) or math.isnan(e) or abs(e) > 1e-38]
    return st.one_of(st.sampled_from(edges), st.floats(width=width))


def binaries() -> st.SearchStrategy[bytes]:
    edges = [b"", b"\x00", b"\x00" * 1024, bytes(range(256))]
    return st.one_of(st.sampled_from(edges), st.just(b"x" * (1 << 20)), st.binary(max_size=64))


# --- Filters -----------------------------------------------------------------------

ENTITIES = (
    "metrics",
    "metric",
    "params",
    "param",
    "parameters",
    "tags",
    "tag",
    "attributes",
    "attribute",
    "Metrics",
    "TAGS",
    "datasets",
    "run",
    "unknown",
)
ATTRIBUTES = (
    "name",
    "run_id",
    "run_name",
    "status",
    "user_id",
    "start_time",
    "end_time",
    "artifact_uri",
    "experiment_id",
    "lifecycle_stage",
    "creation_time",
    "last_update_time",
    "id",
    "state",
    "stage",
    "version",
    "create_time",
    "update_time",
    "external_id",
    "description",
    "owner",
    "author",
    "source_run_id",
    "source_uri",
    "model_version_id",
    "registered_model_id",
    "uri",
    "kind",
    "tags",
    "no_such_field",
)
KEYS = ("m1", "p", "team", "acc", "a b", "", "x.y", "日本", "k\x00", "`", '"', "'")
NUMBERS = (
    "0",
    "-0",
    "1",
    "-1",
    "0.5",
    ".5",
    "+3",
    "1e308",
    "1e309",
    "-1e309",
    "1e-400",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "9" * 400,
    "NaN",
    "inf",
)
COMPARATORS = ("=", "!=", "<>", "<", "<=", ">", ">=")


def _quote(text: str, mark: str = "'") -> str:
    return mark + text.replace(mark, mark * 2) + mark


# Identifiers some list accepts, so a hostile value or shape gets past the names.
VALID_IDENTIFIERS = (
    "name",
    "metrics.m1",
    "params.p",
    "tags.team",
    "attributes.run_name",
    "attributes.start_time",
    "status",
    "state",
    "version",
    "create_time",
    "external_id",
    "tags.`a b`",
)


def _identifier(accepted: tuple[str, ...]) -> st.SearchStrategy[str]:
    key = st.one_of(
        st.sampled_from(KEYS[:3]),
        st.sampled_from(KEYS).map(lambda k: _quote(k, "`") if "`" not in k else k),
        st.sampled_from(KEYS).map(lambda k: _quote(k, '"')),
        st.from_regex(r"[A-Za-z_][\w\-:/]{0,10}", fullmatch=True),
    )
    prefixed = st.tuples(st.sampled_from(ENTITIES), key).map(lambda p: f"{p[0]}.{p[1]}")
    return weighted(
        (3, st.sampled_from(accepted or VALID_IDENTIFIERS)),
        (1, prefixed),
        (1, st.sampled_from(ATTRIBUTES)),
    )


def _literal() -> st.SearchStrategy[str]:
    return weighted(
        (1, st.sampled_from(NUMBERS)),
        (2, strings().map(_quote)),
        (1, st.sampled_from(["'%'", "'%a_'", "'\\'", '"x"', "'x\x00'", "''''", "'x'"])),
    )


def _comparison(accepted: tuple[str, ...]) -> st.SearchStrategy[str]:
    ident, value = _identifier(accepted), _literal()
    return st.one_of(
        st.tuples(ident, st.sampled_from(COMPARATORS), value).map(" ".join),
        st.tuples(ident, st.sampled_from(["LIKE", "ILIKE", "NOT LIKE", "like"]), value).map(
            " ".join
        ),
        st.tuples(
            ident, st.sampled_from(["IN", "NOT IN"]), st.lists(value, min_size=1, max_size=4)
        ).map(lambda t: f"{t[0]} {t[1]} ({', '.join(t[2])})"),
        st.tuples(ident, st.sampled_from(["IS NULL", "IS NOT NULL", "is null"])).map(" ".join),
    )


def _expression(accepted: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.recursive(
        _comparison(accepted),
        lambda inner: st.one_of(
            inner.map(lambda e: f"({e})"),
            st.tuples(
                st.sampled_from([" AND ", " OR ", " and ", " "]),
                st.lists(inner, min_size=2, max_size=4),
            ).map(lambda t: t[0].join(t[1])),
        ),
        max_leaves=8,
    )


def _nested(depth: int, inner: str) -> str:
    return "(" * depth + inner + ")" * depth


PLAIN_FILTERS = (
    "metrics.m1 > 0",
    "params.p = '1'",
    "tags.team = 'x'",
    "name = 'model-0'",
    "name LIKE 'exp-%'",
    "attributes.run_name LIKE 'run-%' AND metrics.m1 >= 0.5",
    "state = 'LIVE' OR tags.team IS NOT NULL",
)


def filters(accepted: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    """Random text, and grammar-shaped filters: nesting, many terms, odd keys, values.

    Args:
        accepted: identifiers the list is known to accept (else some that lists do).
    """
    depths = [1, 2, 31, 32, 33, 50, 100, 195, 196, 197, 400, 2000]
    many = [2, 20, 21, 50, 256, 257, 300]
    # A name some list has, compared with a hostile value: what reaches the SQL.
    aimed = st.tuples(
        st.sampled_from(accepted or VALID_IDENTIFIERS),
        st.sampled_from([*COMPARATORS, "LIKE", "NOT LIKE"]),
        weighted((2, strings().map(_quote)), (1, st.sampled_from(NUMBERS))),
    ).map(" ".join)
    comparison = _comparison(accepted)
    return weighted(
        (1, strings()),
        (2, aimed),
        (2, _expression(accepted)),
        (3, st.tuples(st.sampled_from(depths), comparison).map(lambda t: _nested(*t))),
        (
            1,
            st.tuples(st.sampled_from(many), comparison, st.sampled_from([" AND ", " OR "])).map(
                lambda t: t[2].join([t[1]] * t[0])
            ),
        ),
        (
            1,
            st.sampled_from(many).map(
                lambda n: " AND ".join(f"metrics.k{i} > 0" for i in range(n))
            ),
        ),
        (
            1,
            st.sampled_from([1001, 5000]).map(
                lambda n: "name IN (" + ", ".join(f"'{i}'" for i in range(n)) + ")"
            ),
        ),
        (1, st.sampled_from(["(", ")", "((", "name =", "= 'x'", "AND", "name = 'x' AND", "'"])),
    )


# --- Page tokens ---------------------------------------------------------------------

JSON_EDGES: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1.5,
    -0.0,
    2**31,
    2**63 - 1,
    2**63,
    -(2**63) - 1,
    10**400,
    1e308,
    math.inf,
    -math.inf,
    math.nan,
    "",
    "x",
    "1",
    "\x00",
    "\ud800",
    "a\udfffb",
    "2024-01-01T00:00:00+00:00",
    "2024-01-01T00:00:00",
    "2024-01-01",
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00-14:00",
    "9999-12-31T23:59:59.999999-14:00",
    "9999-12-31T23:59:59.999999+14:00",
    "00000000-0000-0000-0000-000000000000",
    "{00000000-0000-0000-0000-000000000000}",
    "urn:uuid:00000000-0000-0000-0000-000000000000",
    "0" * 32,
    [],
    {},
    [1],
    {"k": 1},
)
json_values = st.recursive(
    st.one_of(
        st.sampled_from(JSON_EDGES),
        st.just("a" * 5000),
        st.integers(),
        st.floats(),
        st.text(max_size=8),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


def encode_token(payload: Any, *, padded: bool = False) -> str:
    """A token as the services write them: URL-safe base64 of compact JSON."""
    text = json.dumps(payload, separators=(",", ":"))
    token = base64.urlsafe_b64encode(text.encode("utf-8", "surrogatepass")).decode()
    return token if padded else token.rstrip("=")


def decode_token(token: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


@dataclass(frozen=True)
class RealToken:
    """A next_page_token a list answered, and the key its service seals tokens with
    (page_seals.py): what forges tokens that get past the seal, to the checks behind it,
    as only a caller who had the key could."""

    sealed: str
    key: bytes

    def payload(self) -> dict[str, Any]:
        return decode_token(self.sealed.rpartition(page_seals.SEPARATOR)[0])

    def forged(self, payload: Any) -> str:
        return page_seals.seal(self.key, encode_token(payload))


def forged_keys(real_key: list[Any]) -> st.SearchStrategy[list[Any]]:
    """A token's sort key changed: right length with some values swapped for hostile
    ones, or any JSON at all."""
    if not real_key:
        return st.lists(json_values, max_size=3)
    slots = [weighted((2, st.just(value)), (1, st.sampled_from(JSON_EDGES))) for value in real_key]
    return st.one_of(st.tuples(*slots).map(list), st.lists(json_values, max_size=4))


def page_tokens(real: RealToken | None = None) -> st.SearchStrategy[str]:
    """Random text, base64 of garbage, base64 of JSON with wrong types, and (given a
    real token) that token with its query fingerprint kept and its key forged: mostly
    sealed with the service's key, sometimes not (which the seal must refuse)."""
    options = [
        strings(),
        st.binary(max_size=48).map(lambda b: base64.urlsafe_b64encode(b).decode()),
        json_values.map(encode_token),
        st.fixed_dictionaries({}, optional={"q": json_values, "k": json_values}).map(encode_token),
        st.sampled_from(["====", "e30", "bnVsbA", "W10", "IiI", "eyJxIjpudWxsfQ"]),
        st.just("a" * 4097),
    ]
    if real:
        payload = real.payload()
        forged = forged_keys(list(payload.get("k") or [])).map(lambda key: {**payload, "k": key})
        sealed, token = forged.map(real.forged), real.sealed
        edited = st.sampled_from(
            [token + "=", token + "A", token + "é", token[:-1], token.replace("-", "+")]
        )
        unsealed = forged.map(encode_token)
        return weighted((4, sealed), (1, unsealed), (1, edited), (2, st.one_of(options)))
    return st.one_of(options)


PLAIN_ORDERS = ("", "create_time desc", "name", "metrics.m1 desc", "id")


def order_bys() -> st.SearchStrategy[str]:
    known = [
        "name",
        "name desc",
        "create_time",
        "create_time DESC",
        "update_time asc",
        "id desc",
        "creation_time desc",
        "last_update_time",
        "metrics.m1 desc",
        "params.p",
        "tags.team asc",
        "attributes.start_time desc",
        "attributes.run_name",
        "metrics.`a b` DESC",
        "version desc",
        "name desc asc",
        "name sideways",
        "metrics.",
        "unknown_field",
    ]
    return weighted((2, st.sampled_from(known)), (1, strings()))
