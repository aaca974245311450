"""The filter language parser: what parses, to what, and where errors point."""

from collections.abc import Callable

import pytest

from cairn_server.common.filter_sql import prefixed_condition
from cairn_server.common.filters import (
    LIMITS,
    BoolOp,
    Comparison,
    FilterError,
    Identifier,
    NullCheck,
    like_matches,
    parse,
    parse_order_by,
    tokenize,
)
from cairn_server.common.sql import Params
from cairn_server.tracking.model import ViewType
from cairn_server.tracking.store.run_filters import ENTITIES, RunQuery, run_scope


def _ident(entity: str, key: str, position: int) -> Identifier:
    return Identifier(entity, key, position)


def test_empty_filter_is_none() -> None:
    assert parse("   ", ENTITIES) is None


def test_mlflow_filter_parses_unchanged() -> None:
    text = (
        "metrics.acc > 0.9 and params.model = 'cnn' and tags.team = 'x' "
        "and attributes.status = 'FINISHED'"
    )
    assert parse(text, ENTITIES) == BoolOp(
        "AND",
        (
            Comparison(_ident("metric", "acc", 0), ">", 0.9),
            Comparison(_ident("param", "model", 22), "=", "cnn"),
            Comparison(_ident("tag", "team", 47), "=", "x"),
            Comparison(_ident("attribute", "status", 67), "=", "FINISHED"),
        ),
    )


@pytest.mark.parametrize(
    "key",
    [
        "über",
        "ключ",
        "ñ_loss",
        "2nd",
        "学习率",
        "123",
        "2-stage",
        "2:x",
        "cafe\u0301",  # é as e and its combining accent, as macOS names files
        "हिन्दी",  # a script whose words need combining vowel signs
        "x\U000e0100",  # a variation selector, a mark past U+1FFFF
    ],
)
def test_keys_of_any_letters_or_a_first_digit_need_no_quotes(key: str) -> None:
    """As MLflow reads names (\\w, any script's letters and digits), with the marks that
    combine with letters: a key holding one was refused unless quoted."""
    assert parse(f"params.{key} = 'x'", ENTITIES) == Comparison(_ident("param", key, 0), "=", "x")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("metrics.'prediction accuracy' >= 0.9", "prediction accuracy"),
        ("metrics.'it''s' >= 0.9", "it's"),
    ],
)
def test_a_key_after_its_entity_may_be_single_quoted(text: str, key: str) -> None:
    """As MLflow reads it (its own search docs write `metrics.'prediction accuracy'`).
    Before, INVALID_FILTER "expected a key, found "'prediction accuracy'"."""
    assert parse(text, ENTITIES) == Comparison(_ident("metric", key, 0), ">=", 0.9)


def test_keywords_are_ascii_words_alone() -> None:
    """A dotless i's upper case is "I": the word of it is no IS."""
    with pytest.raises(FilterError):
        parse("tags.x \u0131s null", ENTITIES)


def test_or_binds_looser_than_and_and_parentheses_group() -> None:
    text = "metrics.a = 1 or metrics.b = 2 and (params.c = 'x' OR tags.d IS NULL)"
    node = parse(text, ENTITIES)
    assert isinstance(node, BoolOp) and node.op == "OR"
    assert node.operands[0] == Comparison(_ident("metric", "a", 0), "=", 1.0)
    right = node.operands[1]
    assert isinstance(right, BoolOp) and right.op == "AND"
    group = right.operands[1]
    assert group == BoolOp(
        "OR",
        (
            Comparison(_ident("param", "c", text.index("params.c")), "=", "x"),
            NullCheck(_ident("tag", "d", text.index("tags.d")), is_null=True),
        ),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("params.m LIKE 'c%'", Comparison(_ident("param", "m", 0), "LIKE", "c%")),
        (
            "params.m not ilike 'C%'",
            Comparison(_ident("param", "m", 0), "ILIKE", "C%", negated=True),
        ),
        ("tags.t IN ('a', 'b')", Comparison(_ident("tag", "t", 0), "IN", ("a", "b"))),
        ("tags.t NOT IN ('a')", Comparison(_ident("tag", "t", 0), "IN", ("a",), negated=True)),
        ("tags.t IS NOT NULL", NullCheck(_ident("tag", "t", 0), is_null=False)),
        ("metrics.`val.acc` >= -1e3", Comparison(_ident("metric", "val.acc", 0), ">=", -1000.0)),
        ('metrics."my loss" < .5', Comparison(_ident("metric", "my loss", 0), "<", 0.5)),
        ("params.a.b != 'x'", Comparison(_ident("param", "a.b", 0), "!=", "x")),
        ('params.a <> "x"', Comparison(_ident("param", "a", 0), "!=", "x")),
        ("run_name = 'it''s'", Comparison(_ident("attribute", "run_name", 0), "=", "it's")),
        ("METRIC.x = 1", Comparison(_ident("metric", "x", 0), "=", 1.0)),
    ],
)
def test_comparisons(text: str, expected: object) -> None:
    assert parse(text, ENTITIES) == expected


@pytest.mark.parametrize(
    ("text", "position", "problem"),
    [
        ("metrics.acc >", 13, "unexpected end"),
        ("foo.x = 1", 0, "unknown entity 'foo'"),
        ("metrics.acc = 1 and", 19, "unexpected end"),
        ("params.a = 'x", 11, "unexpected character"),
        ("metrics.a = 1)", 13, "unexpected ')'"),
        ("metrics.a ! 1", 10, "unexpected character '!'"),
        ("metrics.a = = 1", 12, "expected a 'quoted string' or a number"),
        ("(metrics.a = 1", 14, "unexpected end"),
        ("params.a IN ('x' 'y')", 17, "expected ',' or ')'"),
        ("params.a LIKE 3", 14, "LIKE needs a 'quoted' pattern"),
        ("params.a IS 'x'", 12, "expected NULL"),
        ("and = 1", 0, "expected a field name"),
        ("metrics. = 1", 9, "expected a key"),
        ("metrics.`` = 1", 8, "empty key"),
        # PostgreSQL refuses a LIKE pattern ending in its escape character, and only
        # when a row's text reaches it: refused here, whatever the rows.
        ("params.a LIKE 'abc\\'", 18, "ends in a lone '\\'"),
        ("params.a NOT ILIKE 'it''s\\'", 25, "ends in a lone '\\'"),
        ('params.a LIKE "\\\\\\"', 17, "ends in a lone '\\'"),
    ],
)
def test_errors_name_position_and_problem(text: str, position: int, problem: str) -> None:
    with pytest.raises(FilterError) as raised:
        parse(text, ENTITIES)
    assert raised.value.position == position
    assert problem in raised.value.problem
    assert raised.value.reason == "INVALID_FILTER"
    assert f"position {position}" in raised.value.message


@pytest.mark.parametrize(
    ("text", "entity", "key", "ascending"),
    [
        ("metrics.acc DESC", "metric", "acc", False),
        ("params.lr", "param", "lr", True),
        ("start_time asc", "attribute", "start_time", True),
        ("tags.`a b` desc", "tag", "a b", False),
        ("metrics.ñ_loss DESC", "metric", "ñ_loss", False),
        ("params.123 DESC", "param", "123", False),
        ("metrics.'val acc' DESC", "metric", "val acc", False),
    ],
)
def test_order_by(text: str, entity: str, key: str, ascending: bool) -> None:
    ident, asc = parse_order_by(text, ENTITIES)
    assert (ident.entity, ident.key, asc) == (entity, key, ascending)


def test_order_by_rejects_trailing_words() -> None:
    with pytest.raises(FilterError, match="position 12"):
        parse_order_by("metrics.acc sideways", ENTITIES)


@pytest.mark.parametrize("direction", ["DE\u017fC", "A\u017fC"])
def test_a_direction_is_ascii_as_mlflow_reads_it(direction: str) -> None:
    """A long s (U+017F) upper-cases to S: "DE\u017fC" was taken as DESC, where MLflow
    (and the registry's orders) refuse it."""
    with pytest.raises(FilterError):
        parse_order_by(f"metrics.acc {direction}", ENTITIES)


@pytest.mark.parametrize("status", ["\ufb01nished", "\u017fcheduled"])
def test_a_status_is_named_in_ascii(status: str) -> None:
    """A ligature or a long s upper-cases to plain letters: 'ﬁnished' was read as FINISHED."""
    with pytest.raises(FilterError, match="status is one of"):
        run_scope(RunQuery("p", [1], f"attributes.status = '{status}'", [], ViewType.ALL, 10, ""))


def test_an_escaped_backslash_ends_a_like_pattern() -> None:
    node = parse("params.a LIKE 'c:\\\\'", ENTITIES)
    assert node == Comparison(_ident("param", "a", 0), "LIKE", "c:\\\\")
    assert parse("params.a = 'c:\\'", ENTITIES) is not None  # = has no escapes


def test_an_order_by_is_held_to_the_filter_length_limit() -> None:
    longest = "params." + "k" * (LIMITS.length - len("params."))
    assert parse_order_by(longest, ENTITIES)[0].key == "k" * (LIMITS.length - len("params."))
    with pytest.raises(FilterError) as raised:
        parse_order_by(longest + "k", ENTITIES)
    assert raised.value.reason == "INVALID_ORDER_BY"
    assert raised.value.position == LIMITS.length
    assert "characters" in raised.value.problem


_MI = 1 << 20  # the longest string any request may carry


@pytest.mark.parametrize(
    ("hostile", "position"),
    [
        pytest.param(lambda: "-" + "1" * _MI + "e+x", 0, id="signed-digits-exponent"),
        pytest.param(lambda: "'" + "a" * _MI, 0, id="unclosed-string"),
        pytest.param(lambda: '"' + "a''" * (_MI // 3), 0, id="unclosed-dquoted"),
        pytest.param(lambda: "'" + "a''" * (_MI // 3), -1, id="string-then-quote"),
        pytest.param(lambda: "`" + "a" * _MI, 0, id="unclosed-backtick"),
    ],
)
@pytest.mark.timeout(30)  # fails a test that would hang, rather than hang the suite
def test_the_tokenizer_reads_the_longest_input_in_one_pass(
    hostile: Callable[[], str], position: int
) -> None:
    text = hostile()
    with pytest.raises(FilterError) as raised:
        tokenize(text)
    assert raised.value.position == position % len(text)
    assert "unexpected character" in raised.value.problem


@pytest.mark.parametrize(
    ("hostile", "kinds"),
    [
        # A run of digits followed by a letter once cost quadratic backtracking in the
        # number pattern: 16,000 digits took 16 s, a mebibyte would take hours. It is a
        # word now (a key may start with a digit, as in MLflow), read in one pass.
        pytest.param(lambda: "1" * _MI + "x", ["word"], id="digits-letter"),
        pytest.param(lambda: "1" * _MI + ".x", ["word", "punct", "word"], id="digits-dot-letter"),
        pytest.param(lambda: "." + "1" * _MI + "x", ["punct", "word"], id="dot-digits-letter"),
    ],
)
@pytest.mark.timeout(30)
def test_a_run_of_digits_before_a_letter_is_read_in_one_pass(
    hostile: Callable[[], str], kinds: list[str]
) -> None:
    text = hostile()
    assert [token.kind for token in tokenize(text)] == kinds


def _too_complex(text: str) -> FilterError:
    with pytest.raises(FilterError) as raised:
        parse(text, ENTITIES)
    assert raised.value.reason == "FILTER_TOO_COMPLEX"
    return raised.value


def test_nesting_stops_at_its_limit_not_at_python_recursion() -> None:
    deepest = "(" * LIMITS.depth + "metrics.a > 0" + ")" * LIMITS.depth
    assert parse(deepest, ENTITIES) == Comparison(_ident("metric", "a", LIMITS.depth), ">", 0)
    # 196 levels raised RecursionError (INTERNAL); any depth past the limit is refused.
    for depth in (LIMITS.depth + 1, 196, 1000):
        error = _too_complex("(" * depth + "metrics.a > 0" + ")" * depth)
        assert error.position == LIMITS.depth
        assert "parentheses" in error.problem


def test_terms_keys_in_lists_and_length_have_limits() -> None:
    terms = " OR ".join(["m=1"] * LIMITS.terms)
    assert len(parse(terms, ENTITIES).operands) == LIMITS.terms  # type: ignore[union-attr]
    assert "terms" in _too_complex(terms + " OR m=1").problem
    keys = " OR ".join(f"tags.t{i} = 'x'" for i in range(LIMITS.keys))
    assert len(parse(keys, ENTITIES).operands) == LIMITS.keys  # type: ignore[union-attr]
    assert "distinct keys" in _too_complex(keys + " OR params.p = 'x'").problem
    values = ",".join(["1"] * LIMITS.in_values)
    assert parse(f"metrics.a IN ({values})", ENTITIES) is not None
    assert "IN list" in _too_complex(f"metrics.a IN ({values},1)").problem
    assert "characters" in _too_complex("x" * (LIMITS.length + 1)).problem


def test_attributes_are_no_lookups_and_repeated_keys_count_once() -> None:
    text = " AND ".join(["attributes.status = 'FINISHED'", *["metrics.a > 0"] * 50])
    assert parse(text, ENTITIES) is not None
    many = " OR ".join(f"attributes.run_name = 'r{i}'" for i in range(LIMITS.keys + 5))
    assert parse(many, ENTITIES) is not None


def test_whole_numbers_stay_exact_past_a_floats_precision() -> None:
    # A float holds 53 bits: 2**53 + 1 read as one compared as 2**53, its neighbour.
    for whole in (2**53 + 1, 2**63 - 1, -(2**63)):
        node = parse(f"attributes.start_time = {whole}", ENTITIES)
        assert isinstance(node, Comparison) and type(node.value) is int and node.value == whole
    for text, number in (
        ("1e3", 1000.0),
        ("2.5", 2.5),
        (str(2**63), float(2**63)),
        (str(-(2**63) - 1), float(-(2**63) - 1)),
    ):
        node = parse(f"metrics.a = {text}", ENTITIES)
        assert isinstance(node, Comparison) and type(node.value) is float and node.value == number


def test_like_terms_and_their_patterns_have_limits() -> None:
    """A LIKE compares its pattern at every position of every value it reads: its cost
    grows with the pattern's length and the number of such terms, so both are bounded."""
    share = LIMITS.like_characters // LIMITS.like_terms
    patterns = [f"%{'a' * (share - 2)}%" for _ in range(LIMITS.like_terms)]
    patterns[-1] += "b" * (LIMITS.like_characters - share * LIMITS.like_terms)
    assert sum(map(len, patterns)) == LIMITS.like_characters
    widest = " OR ".join(f"tags.t{i} ILIKE '{pattern}'" for i, pattern in enumerate(patterns))
    assert len(parse(widest, ENTITIES).operands) == LIMITS.like_terms  # type: ignore[union-attr]

    longer = _too_complex(widest[:-1] + "b'")
    assert longer.position == widest.rindex("'%")
    assert f"{LIMITS.like_characters} characters of LIKE" in longer.problem
    one_more = _too_complex(widest + " OR run_name NOT LIKE 'x%'")
    assert one_more.position == len(widest) + len(" OR ")
    assert f"{LIMITS.like_terms} LIKE or ILIKE terms" in one_more.problem


def test_a_single_pattern_is_held_to_the_pattern_limit() -> None:
    longest = "'" + "%" * LIMITS.like_characters + "'"
    assert parse(f"params.p LIKE {longest}", ENTITIES) is not None
    refused = _too_complex(f"params.p LIKE '%{'a' * 4000}b%'")
    assert refused.position == len("params.p LIKE ")
    assert refused.reason == "FILTER_TOO_COMPLEX"


@pytest.mark.parametrize(
    ("pattern", "text", "ignore_case", "expected"),
    [
        ("F%", "FAILED", False, True),
        ("f%", "FAILED", False, False),
        ("f%", "FAILED", True, True),
        ("_AILED", "FAILED", False, True),
        ("_ILED", "FAILED", False, False),
        ("50\\%", "50%", False, True),
        ("50\\%", "500", False, False),
        ("a\\_b", "axb", False, False),
        ("a\\\\b", "a\\b", False, True),
        ("a.c", "abc", False, False),  # regular expressions' characters are themselves
        ("%", "", False, True),
    ],
)
def test_a_like_pattern_matches_as_postgresql_matches_it(
    pattern: str, text: str, ignore_case: bool, expected: bool
) -> None:
    assert like_matches(pattern, text, ignore_case) is expected


@pytest.mark.parametrize(
    "pattern",
    ["%" * LIMITS.like_characters + "X", "%_" * (LIMITS.like_characters // 2), "%a" * 32 + "x"],
)
@pytest.mark.timeout(30)
def test_the_longest_like_pattern_matches_a_status_without_backtracking(pattern: str) -> None:
    """Runs of % each tried at every place of the text backtrack exponentially: as a
    regular expression, 64 of them before a letter would not end in years."""
    assert like_matches(pattern, "SCHEDULED" * 3, ignore_case=True) is False


SHORT, AT = "a" * 199, "a" * 200


@pytest.mark.parametrize(
    ("text", "sql", "values"),
    [
        (f"params.p = '{SHORT}'", "left(v, 200) = $1::text", [SHORT]),
        (f"params.p = '{AT}'", "v = $2::text AND left(v, 200) = $1::text", [AT, AT]),
        (f"params.p IN ('{SHORT}', 'b')", "left(v, 200) = ANY($1::text[])", [[SHORT, "b"]]),
        (
            f"params.p IN ('{SHORT}', '{AT}b')",
            "(v = ANY($2::text[])) AND left(v, 200) = ANY($1::text[])",
            [[SHORT, AT], [SHORT, AT + "b"]],
        ),
        ("params.p != 'b'", "v <> $1::text", ["b"]),
        ("params.p NOT IN ('b')", "NOT (v = ANY($1::text[]))", [["b"]]),
        ("params.p LIKE 'b%'", "v LIKE $1", ["b%"]),
    ],
)
def test_an_equality_compares_a_short_value_by_its_indexed_prefix_alone(
    text: str, sql: str, values: list[object]
) -> None:
    """A value under the prefix's 200 characters equals a stored value's first 200
    only if it is all of it; one of 200 or more is compared whole too. Every value
    added is used (asyncpg refuses a parameter it cannot type)."""
    node = parse(text, ENTITIES)
    assert isinstance(node, Comparison)
    params = Params()
    assert prefixed_condition("v", node, params, 200) == sql
    assert params.values == values


def test_a_number_compared_with_a_prefixed_text_is_refused() -> None:
    node = parse("params.p = 3", ENTITIES)
    assert isinstance(node, Comparison)
    with pytest.raises(FilterError, match="compares with a 'quoted string'"):
        prefixed_condition("v", node, Params(), 200)
