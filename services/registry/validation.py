"""The registry's input rules: names, texts, properties, aliases, masks."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import cast
from urllib.parse import urlsplit

from cairn import _names as names
from cairn.exceptions import InvalidArgumentError
from cairn.models._uris import (
    ARTIFACTS_SCHEME,
    SCHEMES,
    ArtifactUri,
    ModelUri,
    parse_uri,
    scheme_of,
)

from ..common import validation
from ..common.errors import InvalidArgument, invalid_field
from ..common.paging import RESPONSE_RESERVE
from .model import PropertyValue, Stage

MAX_NAME_LENGTH = 256
# A new artifact's type: the kind of a run input its versions are logged as (the
# client's as_input), which the tracking service holds to 250 characters and 250 bytes
# in UTF-8 (a column of the inputs' primary key). Types of up to 256 characters stored
# before stay readable, and as_input refuses them by name.
MAX_TYPE_LENGTH = names.MAX_KEY_LENGTH
MAX_TEXT_LENGTH = 10_000
MAX_URI_LENGTH = 4096
MAX_PROPERTIES = 256
MAX_PROPERTY_TEXT = 8000
MAX_TAGS = 256
MAX_TAG_KEY = 250
MAX_TAG_VALUE = 8000
# What one object's custom properties and tags may hold together: keys and string
# values in UTF-8 bytes, 8 for any other value (object_bytes). Without it 256
# properties of 8,000 characters (up to 8 MB) were legal, and a page of such objects
# could not be sent at all. A model is answered with its latest version of each stage:
# five objects at this limit (LEAST_MESSAGE_BYTES).
MAX_OBJECT_BYTES = 1024 * 1024
# Aliases a registered model may have. A model is answered with all of them, and its
# latest versions with theirs: 256 of 255 characters add 130 KB to a model's answer
# (520 KB of 4-byte characters, well within any message).
# Without a bound, enough aliases made a model and every page holding it unreadable.
MAX_ALIASES = 256
MAX_ALIAS_LENGTH = 255
# The most bytes a character takes in UTF-8: texts, names and aliases at their limits
# in characters.
_UTF8_MOST = 4
# What an object's answer holds beside its texts, properties and tags: ids, project,
# times, state and stage, and each field's tag and length (under 400 bytes measured).
_OBJECT_FRAMING = 1024
# What a property or tag takes in an answer beyond what object_bytes counts of it: its
# entry's tags and lengths (up to 15 bytes), or an int's varint of up to 10 bytes for 8.
_ENTRY_FRAMING = 16
# An alias in an answer beside its characters: the tags and lengths of its entry and
# the version number in the model's map (up to 17 bytes), of its version's list (3).
_ALIAS_FRAMING = 20
# The texts and names of a model (name, external id; description, owner) and of a
# version (name, external id, its model's name; author, description, source run; URI).
_MODEL_CHARACTERS = 2 * MAX_NAME_LENGTH + 2 * MAX_TEXT_LENGTH
_VERSION_CHARACTERS = 3 * MAX_NAME_LENGTH + 3 * MAX_TEXT_LENGTH + MAX_URI_LENGTH


def _answered_bytes(characters: int) -> int:
    """The most an object with characters of texts at their limits takes in an answer."""
    entries = (MAX_PROPERTIES + MAX_TAGS) * _ENTRY_FRAMING
    return MAX_OBJECT_BYTES + entries + characters * _UTF8_MOST + _OBJECT_FRAMING


# The most one registered model within these limits takes in an answer: itself and its
# latest version of each stage, all at the limits, with the model's aliases twice (its
# map, its versions' lists). 6,461,312 bytes; a model built so at the limits in 4-byte
# characters, aliases on its latest versions, was answered in 6,429,122
# (tests/integration/registry/test_least_message.py).
MAX_MODEL_ANSWER_BYTES = (
    _answered_bytes(_MODEL_CHARACTERS)
    + len(Stage) * _answered_bytes(_VERSION_CHARACTERS)
    + 2 * MAX_ALIASES * (MAX_ALIAS_LENGTH * _UTF8_MOST + _ALIAS_FRAMING)
)
# The least CAIRN_MAX_MESSAGE_BYTES the registry is served with (6,526,848 bytes, about
# 6.2 MiB): below it a model within the limits could be stored but not sent, so neither
# read, nor found by name (as every MLflow call by name does first, even one deleting
# the tag that made it too large), nor listed on any page.
LEAST_MESSAGE_BYTES = MAX_MODEL_ANSWER_BYTES + RESPONSE_RESERVE
# Beside letters, marks and digits of any script (Unicode categories L, M and N).
_ALIAS_PUNCTUATION = frozenset("_.-")
# Marks that show nothing (the combining grapheme joiner, variation selectors): with
# them "champion" and "champion\ufe0f" would be two aliases that look the same, and
# "latest\u034f" would pass for no reserved name.
_INVISIBLE_MARKS = frozenset(
    chr(c)
    for c in (0x034F, *range(0x180B, 0x1810), *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0))
)
_RESERVED_ALIAS = re.compile(r"(?i)latest|v\d+|version\d+")
# Two characters at least, so "C:\\models" (a Windows path) is no URI either.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]+:")
# What makes a value without a scheme a filesystem path: a separator, or a start that
# only paths have ("~/m", "./m", "../m", ".").
_PATH_LIKE = re.compile(r"[/\\]|^[.~]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def name(value: str, field: str) -> str:
    return validation.name(value, field, MAX_NAME_LENGTH)


def new_model_name(value: str, field: str) -> str:
    """The name a registered model is created or renamed to (cairn._names, which the
    client checks before a model's files go up). Only a new name is held to the rule
    of its "/"-separated segments: a model stored under "a//b" before it is still
    found, read, updated, renamed away and deleted by its name."""
    if problem := names.registered_model_name_problem(value):
        raise invalid_field(field, problem)
    return value


def optional_name(value: str, field: str) -> str:
    return name(value, field) if value else ""


def text(value: str, field: str) -> str:
    return validation.text(value, field, MAX_TEXT_LENGTH)


def artifact_type(value: str, field: str) -> str:
    """A new artifact's type (or ""), a name a run input's kind may be too."""
    if not value:
        return ""
    validation.name(value, field, MAX_TYPE_LENGTH)
    if (size := len(value.encode())) > MAX_TYPE_LENGTH:
        raise invalid_field(
            field,
            f"must be at most {MAX_TYPE_LENGTH} bytes in UTF-8, got {size}: "
            "it is the kind of the run input a version is logged as",
        )
    return value


def source_run_id(value: str, field: str) -> str:
    """The run a version or artifact came from (or ""). A run id of Cairn's (32
    hexadecimal digits, which the tracking service takes in either case and answers in
    lower case) is kept in lower case, the case a filter `run_id = '<id>'` compares
    with; another system's run id is kept as given."""
    text(value, field)
    return value.lower() if names.RUN_ID.fullmatch(value) else value


def uri(value: str, field: str) -> str:
    """A location others can resolve (or ""). A `file:` URI names a path on one machine
    (the filesystem artifact backend's `ObjectInfo.uri` is one), and so does a path
    without a scheme ("/srv/.cairn/artifacts/...", "models/m.onnx"): stored here, either
    would hand every other client a server's local path, so both are refused. A single
    word without a scheme or a "/" (Kubeflow's own examples register "resource_URI")
    names no path and is kept as it is."""
    validation.text(value, field, MAX_URI_LENGTH)
    # URL parsers (urllib's urlsplit too) skip leading spaces and controls and drop tabs
    # and line breaks anywhere, so " file:m" and "fi\tle:m" are file: URIs to them: a URI
    # holding either is refused, and what is checked below is what they read. (A last
    # space is kept: a run's artifact directory may end in one.)
    if value.startswith(" ") or _CONTROL.search(value):
        raise invalid_field(
            field,
            "a URI starts with no space and holds no control characters (tabs, line "
            "breaks): URL parsers would read another URI",
            "INVALID_ARTIFACT_LOCATION",
        )
    if value and not _SCHEME.match(value) and _PATH_LIKE.search(value):
        raise invalid_field(
            field,
            f"{value[:200]!r} is a path without a scheme, a file on some machine; give "
            "cairn-artifacts://<project>/<path> (ObjectInfo.artifact_uri), runs:/<run_id>/<path>, "
            "models:/<name>/<version> or a URI of another store (s3://, https://, ...)",
            "INVALID_ARTIFACT_LOCATION",
        )
    if value[:5].lower() == "file:":
        raise invalid_field(
            field,
            "a file: URI is a path on one machine; store the files in the artifact service "
            "and give cairn-artifacts://<project>/<path> (ObjectInfo.artifact_uri), "
            "runs:/<run_id>/<path> or models:/<name>/<version>",
            "INVALID_ARTIFACT_LOCATION",
        )
    if scheme_of(value) in SCHEMES:
        _resolvable(value, field)
    return value


def _resolvable(value: str, field: str) -> None:
    """Refuses a URI of Cairn's own schemes that no client can resolve: what the client's
    parser refuses, which is also a path with an empty, "." or ".." segment, as the
    artifact service refuses ("runs:/<id>/../x", "runs:/<id>/a//b"), a model name with
    one ("models:/m1/../1", which URL tools read as models:/1), or an alias no version
    can have. Before, such a source was stored and every download of it failed."""
    try:
        parsed = parse_uri(value)
    except InvalidArgumentError as error:
        raise invalid_field(field, error.message, "INVALID_ARTIFACT_LOCATION") from None
    if isinstance(parsed, ModelUri) and parsed.alias is not None:
        try:
            alias(parsed.alias, "its alias")
        except InvalidArgument as refused:
            raise invalid_field(field, refused.message, "INVALID_ARTIFACT_LOCATION") from None


def updated_uri(value: str, field: str) -> str:
    """A URI an update sends, checked only for its length here: what it names is checked
    (`uri`) by the store once it is known to change, so that one stored before that check
    came in can be sent back as read while another field changes."""
    return validation.text(value, field, MAX_URI_LENGTH)


def entity_id(value: str, field: str) -> str:
    """A required id. One the registry never gave out simply matches nothing (NOT_FOUND),
    as Kubeflow's lookups of unknown ids return None."""
    return validation.name(value, field, 64)


def count(size: int, maximum: int, field: str, what: str) -> None:
    """Refuses more than maximum entries. Called on a request's map or list before
    anything reads its entries: one message can hold millions of them."""
    if size > maximum:
        raise invalid_field(field, f"at most {maximum} {what}, got {size}")


def properties(values: Mapping[str, PropertyValue], field: str) -> dict[str, PropertyValue]:
    count(len(values), MAX_PROPERTIES, field, "properties")
    for key, value in values.items():
        validation.name(key, f"{field}[{key!r}]", MAX_NAME_LENGTH)
        if isinstance(value, str):
            validation.text(value, f"{field}[{key!r}]", MAX_PROPERTY_TEXT)
    return dict(values)


def tags(values: Mapping[str, str], field: str) -> dict[str, str]:
    count(len(values), MAX_TAGS, field, "tags")
    for key, value in values.items():
        validation.name(key, f"{field}[{key!r}]", MAX_TAG_KEY)
        validation.text(value, f"{field}[{key!r}]", MAX_TAG_VALUE)
    return dict(values)


def object_bytes(properties: Mapping[str, PropertyValue], tags: Mapping[str, str]) -> int:
    """The size MAX_OBJECT_BYTES limits; store/common.py's _object_bytes_sql computes the
    same from stored rows."""
    size = sum(
        len(k.encode()) + (len(v.encode()) if isinstance(v, str) else 8)
        for k, v in properties.items()
    )
    return size + sum(len(k.encode()) + len(v.encode()) for k, v in tags.items())


def object_size(
    properties: Mapping[str, PropertyValue], tags: Mapping[str, str], field: str
) -> None:
    """Refuses properties and tags that together pass MAX_OBJECT_BYTES."""
    size = object_bytes(properties, tags)
    if size > MAX_OBJECT_BYTES:
        raise invalid_field(
            field,
            f"custom properties and tags may hold {MAX_OBJECT_BYTES} bytes together "
            f"(keys and string values in UTF-8), got {size}",
        )


def alias(value: str, field: str = "alias") -> str:
    """value in NFC, the one form of each alias: "café" typed with a combining accent, or
    "Kx" with the Kelvin sign, is the alias of the composed letters, not one that looks
    the same beside it.

    Raises:
        InvalidArgument: not 1-255 letters (each with its visible marks) or digits of
            any script, '_', '-' or '.', starting with a letter, digit or '_'; or
            reserved.
    """
    value = unicodedata.normalize("NFC", value)
    if not 0 < len(value) <= MAX_ALIAS_LENGTH or not _alias_shaped(value):
        raise invalid_field(
            field,
            "1-255 letters (of any script, with their marks), digits, '_', '-' or '.', "
            "starting with a letter, a digit or '_'",
        )
    if _RESERVED_ALIAS.fullmatch(value):
        raise invalid_field(field, f"{value!r} is reserved ('latest' and v<number> name versions)")
    return value


def own_files(uri: str, project: str, field: str) -> None:
    """Refuses a cairn-artifacts:// URI of another project, when a version or artifact
    is made with it or changed to it: its readers who belong to both projects would be
    sent to files its writer may not even read, under a name of this project. The
    project is read as the client reads it (up to the first "/"): URL tools end it at a
    "?" or "#" too, and took cairn-artifacts://<project>?x/m for one of this project."""
    if scheme_of(uri) != ARTIFACTS_SCHEME:
        try:
            urlsplit(uri)
        except ValueError:  # an unclosed "[" of a host, say
            raise invalid_field(field, "is no URI", "INVALID_ARTIFACT_LOCATION") from None
        return
    try:
        named = cast(ArtifactUri, parse_uri(uri, field))  # as all of its scheme are
        validation.project(named.project)
    except (InvalidArgumentError, InvalidArgument):
        raise invalid_field(
            field, "is no URI of a project's files", "INVALID_ARTIFACT_LOCATION"
        ) from None
    if named.project != project:
        raise invalid_field(
            field,
            f"files of the registry are in its own project: cairn-artifacts://{project}/<path>",
            "INVALID_ARTIFACT_LOCATION",
        )


def _alias_shaped(value: str) -> bool:
    """Whether value is letters, digits, '_', '-' and '.', each letter followed by its
    visible marks only, and starts with a letter, a digit or '_'."""
    if value[0] in ".-":
        return False
    after = "P"  # the kind of the character before: a mark follows a letter or a mark
    for character in value:
        kind = unicodedata.category(character)[0]
        if kind == "M":
            if after not in "LM" or character in _INVISIBLE_MARKS:
                return False
        elif kind not in "LN" and character not in _ALIAS_PUNCTUATION:
            return False
        after = kind
    return True
