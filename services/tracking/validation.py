"""The tracking service's input rules and limits (documented in docs/tracking.md)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from cairn._names import EXPERIMENT_ID, MAX_KEY_LENGTH, MAX_TAG_VALUE_LENGTH

from ..common import validation
from ..common.errors import InvalidArgument, NotFound, invalid_field
from .model import ARTIFACT_SCHEME
from .store.write_statements import METRIC_REQUEST_PREFIX

MAX_PARAM_VALUE_LENGTH = 6000
MAX_NAME_LENGTH = 500
MAX_URI_LENGTH = 2048
MAX_METRICS_PER_BATCH = 100_000
MAX_PARAMS_PER_BATCH = 1000
MAX_TAGS_PER_BATCH = 1000
MAX_INPUTS_PER_CALL = 1000
MAX_REQUEST_ID_LENGTH = 128
# An experiment's tags, keys and values in UTF-8 and each tag's framing: an experiment
# is always answered in one message, and the least a server may send is 1 MiB.
MAX_EXPERIMENT_TAG_BYTES = 512 * 1024
# The most a tag takes on the wire beside its key's and value's bytes: its field's tag
# and length (3 bytes: a tag holds at most 1,000 + 32,000 + 7 bytes), and each string's
# (a key's length, at most 1,000 bytes, in 2; a value's, at most 32,000, in 3). Counting
# the strings alone let 177,770 tags of 1-3 character keys and empty values in, 1.2 MB
# on the wire: an experiment no server of 1 MiB messages could answer.
EXPERIMENT_TAG_FRAMING = 1 + 3 + (1 + 2) + (1 + 3)
_RUN_ID = re.compile(r"[0-9a-f]{32}")
MAX_EXPERIMENT_ID = 2**63 - 1  # PostgreSQL's bigint


def run_id(value: str, field: str = "run_id") -> str:
    lowered = value.lower()
    if not is_run_id(lowered):
        raise invalid_field(field, "must be 32 hexadecimal characters")
    return lowered


def is_run_id(value: object) -> bool:
    """Whether value is a run id as runs hold theirs: 32 lower-case hexadecimal digits."""
    return isinstance(value, str) and _RUN_ID.fullmatch(value) is not None


# MLflow's examples write create_run("0"), its Default experiment, which Cairn never makes.
_NO_DEFAULT_EXPERIMENT = (
    "experiment ids start at 1; Cairn has no Default experiment 0: "
    "create one, or find one with get_experiment_by_name"
)


def experiment_id(value: str, field: str = "experiment_id") -> int:
    if value == "0":
        raise invalid_field(field, _NO_DEFAULT_EXPERIMENT)
    if not EXPERIMENT_ID.fullmatch(value):
        raise invalid_field(field, "must be a positive integer, as a string")
    number = int(value)
    if number > MAX_EXPERIMENT_ID:  # a well-formed id no bigint column can hold
        raise NotFound(
            "EXPERIMENT_NOT_FOUND",
            f"experiment {value} not found",
            metadata={"experiment_id": value},
        )
    return number


def run_time(value: int, field: str) -> int:
    """A run's start or end time in milliseconds since 1970; 0 is now."""
    if value < 0:
        raise invalid_field(field, "must not be negative")
    return value


def key(value: str, field: str) -> str:
    return validation.name(value, field, MAX_KEY_LENGTH)


def param_value(value: str, field: str) -> str:
    return validation.text(value, field, MAX_PARAM_VALUE_LENGTH)


def tag_value(value: str, field: str) -> str:
    return validation.text(value, field, MAX_TAG_VALUE_LENGTH)


def experiment_name(value: str, field: str = "name") -> str:
    return validation.name(value, field, MAX_NAME_LENGTH)


def run_name(value: str, field: str = "run_name") -> str:
    return validation.name(value, field, MAX_NAME_LENGTH) if value else ""


def uri(value: str, field: str) -> str:
    return validation.text(value, field, MAX_URI_LENGTH)


def artifact_location(value: str, project: str) -> str:
    """Empty (runs then keep artifacts under the experiment's default location), or a
    path in the artifact service inside the experiment's own project."""
    uri(value, "artifact_location")
    if not value:
        return value
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unclosed "[" in the host
        parts = urlsplit("")
    segments = parts.path.removeprefix("/").split("/")
    if (
        parts.scheme != ARTIFACT_SCHEME
        or parts.netloc != project
        or parts.query
        or parts.fragment
        or any(segment in ("", ".", "..") for segment in segments)
    ):
        raise invalid_field(
            "artifact_location",
            f"must be {ARTIFACT_SCHEME}://{project}/<path>: an experiment keeps its "
            "artifacts in its own project",
            "INVALID_ARTIFACT_LOCATION",
        )
    # One spelling per place: the purge compares locations as text, and another
    # spelling (the scheme's case, spaces or tabs, which parsing drops) of a location
    # another experiment keeps would not look shared.
    canonical = f"{ARTIFACT_SCHEME}://{project}/{'/'.join(segments)}"
    if value != canonical:
        raise invalid_field(
            "artifact_location", f"write it as {canonical!r}", "INVALID_ARTIFACT_LOCATION"
        )
    return value


def request_id(value: str, field: str = "request_id") -> str:
    """A LogBatch request id: printable, not too long, and not of LogMetric's kind."""
    if (
        len(value) > MAX_REQUEST_ID_LENGTH
        or not value.isprintable()
        or value.startswith(METRIC_REQUEST_PREFIX)
    ):
        raise invalid_field(
            field,
            f"must be printable, at most {MAX_REQUEST_ID_LENGTH} characters and not start "
            f"with {METRIC_REQUEST_PREFIX!r}",
        )
    return value


def tag_bytes(tags: Mapping[str, str]) -> int:
    """What tags take against MAX_EXPERIMENT_TAG_BYTES."""
    strings = sum(len(key.encode()) + len(value.encode()) for key, value in tags.items())
    return counted_tag_bytes(strings, len(tags))


def counted_tag_bytes(strings: int, entries: int) -> int:
    """What tags whose keys and values take strings bytes in UTF-8 take against
    MAX_EXPERIMENT_TAG_BYTES: at least what they take on the wire."""
    return strings + EXPERIMENT_TAG_FRAMING * entries


def experiment_tag_bytes(size: int, field: str) -> None:
    """Refuses tags that would take an experiment's past MAX_EXPERIMENT_TAG_BYTES."""
    if size > MAX_EXPERIMENT_TAG_BYTES:
        raise invalid_field(
            field,
            f"an experiment's tags may hold {MAX_EXPERIMENT_TAG_BYTES} bytes (keys and "
            f"values in UTF-8, and {EXPERIMENT_TAG_FRAMING} a tag); these would take "
            f"{size}: delete tags first",
            "TAGS_TOO_LARGE",
        )


def count(items: int, limit: int, field: str) -> None:
    if items > limit:
        raise InvalidArgument(
            "INVALID_ARGUMENT",
            f"{field}: at most {limit} per request, got {items}",
            metadata={"field": field, "limit": str(limit), "count": str(items)},
        )
