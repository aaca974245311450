"""A journal file read a line at a time: a sync holds one line of it, never the whole
file, and a file that is no journal (a dataset's JSON lines, say, synced by mistake) is
refused at its first line rather than read to its end."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from .. import _names as names
from .._argument_error import invalid_argument
from .._names import MAX_KEY_LENGTH
from .._numbers import is_bool, real, whole
from ..exceptions import InvalidArgumentError
from ..types._tracking import Metric, RunStatus
from .run_batches import MAX_BATCH_BYTES, POINT_BYTES

# The longest line a journal's write makes: a batch's most points, each with the
# longest key as JSON escapes it (12 bytes a character, as a surrogate pair), its
# numbers and punctuation. About 74 MB; a usual line is well under 1 MB.
MAX_LINE_BYTES = (MAX_BATCH_BYTES // POINT_BYTES + 1) * (12 * MAX_KEY_LENGTH + 100)
# The first line names a run id and a project: about 100 bytes. A file whose first line
# is longer is no journal (a dataset's long line, parsed, took some 15 times its bytes).
MAX_HEADER_BYTES = 1024

T = TypeVar("T")


@dataclass(frozen=True)
class Batch:
    """A line of metrics, with the request id they were (or would have been) sent with."""

    request_id: str
    metrics: list[Metric]


@dataclass(frozen=True)
class End:
    """The last line of a run that ended: its status, and when (milliseconds)."""

    status: RunStatus
    end_time: int | None


class JournalLines:
    """The lines of a journal file open for reading (binary), parsed one at a time.
    Every fault is InvalidArgumentError (INVALID_JOURNAL), naming the file and the line."""

    def __init__(self, path: Path, stream: BinaryIO) -> None:
        self._path = path
        self._stream = stream
        self._number = 0

    def header(self) -> tuple[str, str]:
        """The run id and project the first line names."""
        line = self._line(MAX_HEADER_BYTES)
        if line is None:
            raise self._invalid("it is empty")
        return self._parsed(line, _header)

    def next(self) -> Batch | End | None:
        """The next line's batch or end; None after the last line."""
        line = self._line(MAX_LINE_BYTES)
        return None if line is None else self._parsed(line, _entry)

    def _line(self, limit: int) -> bytes | None:
        """The next line that is not blank, of at most limit bytes; None at the end."""
        while True:
            line = self._stream.readline(limit + 1)
            self._number += 1
            if len(line) > limit:
                raise self._invalid(f"line {self._number} is longer than any journal writes")
            if not line:
                return None
            if line.strip():
                return line

    def _parsed(self, line: bytes, meaning: Callable[[Any], T]) -> T:
        try:
            return meaning(json.loads(line.decode("utf-8")))
        except json.JSONDecodeError as error:  # whose own line is 1: the file's is ours
            where = f"line {self._number}, column {error.colno}"
            raise self._invalid(f"{where}: not JSON: {error.msg}") from None
        except InvalidArgumentError as error:  # a field's own check (names.key, whole), naming it
            raise self._invalid(f"line {self._number}: {error.message}") from None
        # ValueError holds UnicodeDecodeError; RecursionError is JSON nested deeper than
        # Python's stack.
        except (ValueError, KeyError, TypeError, RecursionError) as error:
            raise self._invalid(f"line {self._number}: {type(error).__name__}: {error}") from None

    def _invalid(self, what: str) -> InvalidArgumentError:
        if len(what) > MAX_SHOWN_CHARACTERS:  # a value quoted whole: a line holds 74 MB
            what = what[:MAX_SHOWN_CHARACTERS] + "…"
        return InvalidArgumentError(
            f"{self._path} is no journal of a run: {what}", reason="INVALID_JOURNAL"
        )


# How much of what a refused line holds its error quotes.
MAX_SHOWN_CHARACTERS = 300
_KEY = "a point's key"  # as a refusal names it
# The statuses a run's end sets (as set_terminated takes them).
_ENDS = (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED)


def _header(fields: Any) -> tuple[str, str]:
    """The run id and project a first line names, in the shape a client writes them: a
    first line of another shape names no run a sync could store to."""
    run_id, project = fields["run_id"], fields["project"]
    if not isinstance(run_id, str) or not names.RUN_ID.fullmatch(run_id):
        raise ValueError(f"a journal's run_id is a run id (32 hex digits), not {run_id!r}")
    if not isinstance(project, str) or not project:
        raise ValueError(f"a journal's project is a project's name, not {project!r}")
    return run_id, project


def _entry(fields: Any) -> Batch | End:
    if "status" in fields:
        status = RunStatus[fields["status"]]
        if status not in _ENDS:
            raise ValueError(f"a run ends {', '.join(_ENDS[:-1])} or {_ENDS[-1]}, not {status}")
        return End(status, _end_time(fields.get("end_time")))
    request_id = fields["request_id"]
    if not isinstance(request_id, str) or not request_id:
        # Sent without one, a batch would get a new id at every sync, and be stored again.
        raise ValueError(f"a batch's request_id is a string of its own, not {request_id!r}")
    points = fields["metrics"]
    if not isinstance(points, list):  # a string or an object iterates too
        raise ValueError(f"a batch's metrics are a list of points, not a {type(points).__name__}")
    return Batch(request_id, [_metric(k, v, t, s) for k, v, t, s in points])


def _metric(key: Any, value: Any, timestamp: Any, step: Any) -> Metric:
    """A point as a run checks it when logged (ActiveRun's _checked): one the server
    refuses, or no number at all, is refused here, naming the file and the line, not by
    the server with its whole batch, naming neither."""
    if is_bool(value):  # real() takes True as 1.0, as log_metric does: a journal holds 1.0
        raise invalid_argument("a point's value", f"{value!r} is no number")
    return Metric(
        _key(key),
        real(value, "a point's value"),
        whole(timestamp, "a point's timestamp"),
        whole(step, "a point's step"),
    )


def _key(value: Any) -> str:
    # A batch holds few keys, each many times: each is checked once (a check takes
    # 1.8 µs, more than all the rest of a point's reading).
    return _checked_key(value) if isinstance(value, str) else names.key(value, _KEY)


@functools.lru_cache(maxsize=1024)
def _checked_key(value: str) -> str:
    return names.key(value, _KEY)


def _end_time(value: Any) -> int | None:
    """The milliseconds a run ended at (None, or 0: when it is stored), as the server
    takes them."""
    if value is None:
        return None
    end_time = whole(value, "an end's end_time")
    if end_time < 0:
        raise invalid_argument(
            "an end's end_time", f"must be 0 or more milliseconds, got {end_time}"
        )
    return end_time
