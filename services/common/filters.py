"""The search filter language shared by the tracking and registry services.

MLflow's filter strings parse unchanged (`metrics.acc > 0.9 and params.model = 'cnn'`),
and Cairn adds OR, parentheses, NOT IN / NOT LIKE and IS [NOT] NULL::

    filter     := or_expr
    or_expr    := and_expr ("OR" and_expr)*
    and_expr   := term ("AND" term)*
    term       := "(" or_expr ")" | comparison
    comparison := ident op value
                | ident ["NOT"] ("LIKE" | "ILIKE") string
                | ident ["NOT"] "IN" "(" value ("," value)* ")"
                | ident "IS" ["NOT"] "NULL"
    ident      := [entity "."] key        key: word, `backticked` or "double-quoted"
    op         := "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    value      := 'single-quoted' or "double-quoted" string | number

Keywords are case-insensitive. The parser only builds a tree; each service turns it
into parameterized SQL, so no value is ever spliced into a statement.

A filter's cost is bounded before any SQL exists: `LIMITS` caps its length, terms and
nesting, the distinct keys it looks up, the values of one IN list, and its LIKE and
ILIKE terms with their patterns' characters (FILTER_TOO_COMPLEX); an order_by clause
is held to the same length. Every token is read in one pass, so reading costs time
linear in the text.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from .errors import InvalidArgument

Value = str | int | float


@dataclass(frozen=True)
class Limits:
    """How big one filter may be; docs/filters.md lists the same numbers."""

    length: int = 4096  # characters
    terms: int = 256  # comparisons and IS NULL checks
    depth: int = 32  # nested parentheses
    keys: int = 12  # distinct metric, param and tag keys (each one lookup)
    in_values: int = 1000  # values of one IN list
    like_terms: int = 5  # LIKE and ILIKE terms (NOT LIKE, NOT ILIKE included)
    like_characters: int = 64  # of all LIKE and ILIKE patterns together


LIMITS = Limits()


class FilterError(InvalidArgument):
    """A filter that does not parse or names something unknown; says where and why."""

    def __init__(self, position: int, problem: str, reason: str = "INVALID_FILTER") -> None:
        subject = "order_by" if reason == "INVALID_ORDER_BY" else "filter"
        super().__init__(
            reason,
            f"invalid {subject} at position {position}: {problem}",
            metadata={"position": str(position)},
        )
        self.position = position
        self.problem = problem


@contextlib.contextmanager
def ordering() -> Iterator[None]:
    """Reports what goes wrong inside as an order_by error (INVALID_ORDER_BY): the
    parser and the field lookups serve filters and orders alike."""
    try:
        yield
    except FilterError as error:
        if error.reason != "INVALID_FILTER":
            raise
        raise FilterError(error.position, error.problem, "INVALID_ORDER_BY") from None


def too_complex(position: int, what: str, limit: int) -> FilterError:
    return FilterError(
        position, f"a filter may have at most {limit} {what}", reason="FILTER_TOO_COMPLEX"
    )


@dataclass(frozen=True)
class Identifier:
    entity: str  # canonical entity, e.g. "metric", "param", "tag", "attribute"
    key: str
    position: int


@dataclass(frozen=True)
class Comparison:
    """ident op value; op is one of = != < <= > >= LIKE ILIKE IN (negated for NOT)."""

    ident: Identifier
    op: str
    value: Value | tuple[Value, ...]
    negated: bool = False

    @property
    def values(self) -> tuple[Value, ...]:
        """The value, or the values of an IN, as a tuple."""
        return self.value if isinstance(self.value, tuple) else (self.value,)


@dataclass(frozen=True)
class NullCheck:
    ident: Identifier
    is_null: bool


@dataclass(frozen=True)
class BoolOp:
    op: str  # "AND" or "OR"
    operands: tuple[Node, ...]


Node = Comparison | NullCheck | BoolOp


def _combining_marks() -> str:
    r"""The combining marks (Unicode category M) as a regex class's body. \w leaves them
    out, though words of many scripts hold them (हिन्दी) and an é may be written as e
    and U+0301 (as macOS names files): such a key was refused unless quoted. Past
    U+1FFFF only the variation selectors U+E0100-E01EF are marks; the scan of the
    rest takes 17 ms, once."""
    marks = [chr(code) for code in range(0x20000) if unicodedata.category(chr(code))[0] == "M"]
    return re.escape("".join(marks)) + "\U000e0100-\U000e01ef"


_WORD = rf"[\w{_combining_marks()}\-:/]"

# A key right after an entity's "." is read whole, digits first included (`params.123`,
# `params.2-stage`), as MLflow reads it: a number never starts right after a word or a
# "." (".5" alone is one). Each pattern reads a token in one pass. The number is atomic,
# (?>...): once read, it is not given back digit by digit to retry the check after it,
# which cost quadratic time on a run of digits followed by a letter (16,000 digits: 16 s
# on the event loop). Whatever a shorter prefix would leave next is a digit, "." or "e",
# which that check refuses too. Its digits are ASCII, as MLflow's: \d also reads the
# digits of other scripts (Arabic-Indic, fullwidth), and int() takes them.
_TOKEN = re.compile(
    rf"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<dquoted>"(?:[^"]|"")*")
  | (?P<backtick>`[^`]*`)
  | (?P<key>(?<=\.){_WORD}+)
  | (?P<number>(?<![\w.])(?>[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)(?![\w.]))
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<punct>[(),.])
  | (?P<word>\w{_WORD}*)
    """,
    re.VERBOSE,
)
_KEYWORDS = {"AND", "OR", "NOT", "IN", "LIKE", "ILIKE", "IS", "NULL"}


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    position: int  # 0-based offset in the filter string

    @property
    def keyword(self) -> str | None:
        upper = self.text.upper()  # ASCII alone: a dotless i's upper case is "I"
        return upper if self.kind == "word" and self.text.isascii() and upper in _KEYWORDS else None


def tokenize(text: str) -> list[_Token]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match:
            raise FilterError(position, f"unexpected character {text[position]!r}")
        kind = match.lastgroup or ""
        kind = "word" if kind == "key" else kind
        if kind != "ws":
            tokens.append(_Token(kind, match.group(), position))
        position = match.end()
    return tokens


def parse(text: str, entities: Mapping[str, str], default_entity: str = "attribute") -> Node | None:
    """Parses a filter; None for an empty one.

    Args:
        text: the filter string.
        entities: accepted entity prefixes (any case) to canonical entity names, e.g.
            {"metrics": "metric", "metric": "metric", "params": "param", ...}.
        default_entity: the entity of a key written without a prefix.

    Raises:
        FilterError: with the 0-based position of the problem.
    """
    if len(text) > LIMITS.length:
        raise too_complex(LIMITS.length, "characters", LIMITS.length)
    tokens = tokenize(text)
    if not tokens:
        return None
    parser = _Parser(tokens, len(text), {k.lower(): v for k, v in entities.items()}, default_entity)
    node = parser.or_expr()
    parser.expect_end()
    return node


class _Parser:
    def __init__(self, tokens: list[_Token], end: int, entities: dict[str, str], default: str):
        self.tokens, self.end, self.entities, self.default = tokens, end, entities, default
        self.index = 0
        self.depth = 0
        self.terms = 0
        self.like_terms = 0
        self.like_characters = 0
        self.keys: set[tuple[str, str]] = set()

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise FilterError(self.end, "unexpected end of filter")
        self.index += 1
        return token

    def at_keyword(self, *words: str) -> bool:
        token = self.peek()
        return token is not None and token.keyword in words

    def expect_keyword(self, word: str) -> None:
        token = self.take()
        if token.keyword != word:
            raise FilterError(token.position, f"expected {word}, found {token.text!r}")

    def expect_punct(self, text: str) -> _Token:
        token = self.take()
        if token.text != text:
            raise FilterError(token.position, f"expected {text!r}, found {token.text!r}")
        return token

    def expect_end(self) -> None:
        token = self.peek()
        if token is not None:
            raise FilterError(token.position, f"unexpected {token.text!r}")

    def or_expr(self) -> Node:
        return self._chain("OR", self.and_expr)

    def and_expr(self) -> Node:
        return self._chain("AND", self.term)

    def _chain(self, word: str, operand: Callable[[], Node]) -> Node:
        nodes = [operand()]
        while self.at_keyword(word):
            self.take()
            nodes.append(operand())
        return nodes[0] if len(nodes) == 1 else BoolOp(word, tuple(nodes))

    def term(self) -> Node:
        token = self.peek()
        if token is not None and token.text == "(":
            self.take()
            self.depth += 1
            if self.depth > LIMITS.depth:
                raise too_complex(token.position, "levels of parentheses", LIMITS.depth)
            node = self.or_expr()
            self.expect_punct(")")
            self.depth -= 1
            return node
        return self.comparison()

    def comparison(self) -> Node:
        ident = self.identifier()
        self._count(ident)
        token = self.take()
        if token.kind == "op":
            return Comparison(ident, "!=" if token.text == "<>" else token.text, self.value())
        if token.keyword == "IS":
            negated = self.at_keyword("NOT")
            if negated:
                self.take()
            self.expect_keyword("NULL")
            return NullCheck(ident, is_null=not negated)
        negated = token.keyword == "NOT"
        if negated:
            token = self.take()
        if token.keyword in ("LIKE", "ILIKE"):
            return Comparison(ident, token.keyword, self._counted_pattern(ident), negated)
        if token.keyword == "IN":
            return Comparison(ident, "IN", self.value_list(), negated)
        raise FilterError(token.position, f"expected a comparison operator, found {token.text!r}")

    def _count(self, ident: Identifier) -> None:
        self.terms += 1
        if self.terms > LIMITS.terms:
            raise too_complex(ident.position, "terms", LIMITS.terms)
        if ident.entity != "attribute":
            self.keys.add((ident.entity, ident.key))
            if len(self.keys) > LIMITS.keys:
                raise too_complex(ident.position, "distinct keys", LIMITS.keys)

    def _counted_pattern(self, ident: Identifier) -> str:
        """A LIKE term's pattern, held with the filter's other patterns to the limits:
        PostgreSQL compares a pattern at each position of each value it tests, so a
        term costs up to its pattern's length times the value's (an 8,000-character
        tag against a 4,000-character pattern: 12 ms a run)."""
        self.like_terms += 1
        if self.like_terms > LIMITS.like_terms:
            raise too_complex(ident.position, "LIKE or ILIKE terms", LIMITS.like_terms)
        start = self.peek()
        pattern = self.pattern()
        self.like_characters += len(pattern)
        if self.like_characters > LIMITS.like_characters and start is not None:
            raise too_complex(
                start.position, "characters of LIKE and ILIKE patterns", LIMITS.like_characters
            )
        return pattern

    def identifier(self) -> Identifier:
        first = self.take()
        if first.kind not in ("word", "backtick", "dquoted") or first.keyword:
            raise FilterError(first.position, f"expected a field name, found {first.text!r}")
        after = self.peek()
        if first.kind == "word" and after is not None and after.text == ".":
            entity = self.entities.get(first.text.lower())
            if entity is None:
                known = ", ".join(sorted(self.entities))
                raise FilterError(
                    first.position, f"unknown entity {first.text!r}; use one of {known}"
                )
            self.take()
            return Identifier(entity, self.key(), first.position)
        return Identifier(self.default, _unquote(first), first.position)

    def key(self) -> str:
        parts = [self._key_part()]
        while (token := self.peek()) is not None and token.text == ".":
            self.take()
            parts.append(self._key_part())
        return ".".join(parts)

    def _key_part(self) -> str:
        token = self.take()
        # After an entity's "." a 'single-quoted' key is a key, as MLflow reads it.
        if token.kind not in ("word", "backtick", "dquoted", "string"):
            raise FilterError(token.position, f"expected a key, found {token.text!r}")
        key = _unquote(token)
        if not key:
            raise FilterError(token.position, "empty key")
        return key

    def value(self) -> Value:
        token = self.take()
        if token.kind == "string":
            return token.text[1:-1].replace("''", "'")
        if token.kind == "dquoted":  # MLflow accepts "double-quoted" values too.
            return token.text[1:-1].replace('""', '"')
        if token.kind == "number":
            return _number(token.text)
        raise FilterError(
            token.position, f"expected a 'quoted string' or a number, found {token.text!r}"
        )

    def pattern(self) -> str:
        """A LIKE pattern: a string whose last character is not a lone escape."""
        token = self.peek()
        value = self.value()
        if not isinstance(value, str):
            raise FilterError(
                token.position if token else self.end, "LIKE needs a 'quoted' pattern"
            )
        # A backslash escapes the character after it (\% \_ \\). PostgreSQL refuses a
        # pattern ending in a lone one, but only once a row's text gets that far
        # (INTERNAL, for some rows only): refused here, whatever the rows.
        trailing = len(value) - len(value.rstrip("\\"))
        if trailing % 2 and token is not None:
            raise FilterError(
                token.position + len(token.text) - 2,
                "the LIKE pattern ends in a lone '\\' (write '\\\\' to match a backslash)",
            )
        return value

    def value_list(self) -> tuple[Value, ...]:
        self.expect_punct("(")
        values = [self.value()]
        while (token := self.take()).text == ",":
            if len(values) == LIMITS.in_values:
                raise too_complex(token.position, "values in one IN list", LIMITS.in_values)
            values.append(self.value())
        if token.text != ")":
            raise FilterError(token.position, f"expected ',' or ')', found {token.text!r}")
        return tuple(values)


def is_int64(value: float) -> bool:
    """Whether value is a whole number of PostgreSQL's bigint (NaN and infinities are
    not). A float of -2**63 is not: it may be a longer number rounded to it."""
    if isinstance(value, float):
        return -(2**63) < value < 2**63 and value.is_integer()
    return -(2**63) <= value < 2**63


def _number(text: str) -> int | float:
    """A whole number of the int64 range exactly (a float holds 53 bits: start times
    and ids past 2**53 would compare as their neighbours), any other as a float."""
    if text.lstrip("+-").isdigit() and is_int64(whole := int(text)):
        return whole
    return float(text)


def parse_order_by(
    text: str, entities: Mapping[str, str], default_entity: str = "attribute"
) -> tuple[Identifier, bool]:
    """Parses one order clause such as "metrics.acc DESC"; returns (field, ascending).

    A clause is held to a filter's length limit (INVALID_ORDER_BY past it): longer
    ones name no field anyone logs, and would cost their length to read.
    """
    with ordering():
        if len(text) > LIMITS.length:
            raise FilterError(
                LIMITS.length, f"an order_by term may have at most {LIMITS.length} characters"
            )
        tokens = tokenize(text)
        entities = {k.lower(): v for k, v in entities.items()}
        parser = _Parser(tokens, len(text), entities, default_entity)
        ident = parser.identifier()
        ascending = True
        token = parser.peek()
        if token is not None and token.kind == "word" and _direction(token.text):
            ascending = parser.take().text.upper() == "ASC"
        parser.expect_end()
    return ident, ascending


def _direction(word: str) -> bool:
    """Whether word is ASC or DESC, in ASCII alone as MLflow reads it ("DE\u017fC", a
    long s, upper-cased to DESC)."""
    return word.isascii() and word.upper() in ("ASC", "DESC")


def like_matches(pattern: str, text: str, ignore_case: bool) -> bool:
    """Whether text matches a LIKE pattern as PostgreSQL matches it: % any run of
    characters, _ any one, a backslash making the character after it itself; ILIKE
    (ignore_case) compares lower cases. For a field whose few values are known here
    rather than stored as text (a run's status).

    The places of text the pattern so far can end at are carried along it, which costs
    the pattern's length times the text's: a regular expression of the pattern
    backtracked exponentially ("%%%...X", 20 of them: 0.1 s, each more 1.6x that)."""
    if ignore_case:
        pattern, text = pattern.lower(), text.lower()
    reached, escaped = {0}, False
    for char in pattern:
        if not escaped and char == "\\":
            escaped = True
            continue
        if not escaped and char == "%":
            reached = set(range(min(reached), len(text) + 1)) if reached else reached
        else:
            wildcard = not escaped and char == "_"
            reached = {p + 1 for p in reached if p < len(text) and (wildcard or text[p] == char)}
        escaped = False
    return len(text) in reached


def _unquote(token: _Token) -> str:
    if token.kind == "backtick":
        return token.text[1:-1]
    if token.kind == "dquoted":
        return token.text[1:-1].replace('""', '"')
    if token.kind == "string":
        return token.text[1:-1].replace("''", "'")
    return token.text
