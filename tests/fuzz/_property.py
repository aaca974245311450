"""The fuzz property: what no answer may be, and why an answer broke it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import grpc

from ._rpc import Outcome

# An answer later than this is a request whose cost is not bounded.
CALL_TIMEOUT = 20.0
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
# DATA_LOSS is what a checksum the content does not match answers (documented); any
# other DATA_LOSS from a fuzzed call would mean stored bytes went missing.
EXPECTED_DATA_LOSS = {"CHECKSUM_MISMATCH"}


def failure(outcome: Outcome, logged: dict[str, str]) -> str | None:
    """Why an answer breaks the property (None when it does not): for INTERNAL, the
    exception the server logged under the call's correlation id."""
    code = outcome.code
    if code in NEVER:
        cause = logged.get(dict(outcome.info).get("correlation_id", ""), outcome.message)
        return _normalized(cause)
    if code == grpc.StatusCode.DATA_LOSS and outcome.reason not in EXPECTED_DATA_LOSS:
        return f"unexpected DATA_LOSS: {_normalized(outcome.message)}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and not outcome.reason:
        return f"no answer within {CALL_TIMEOUT:.0f} s"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and (
        "metadata size" in outcome.message or outcome.reason == "INVALID_ARGUMENT"
    ):
        # The server's answer did not arrive: its status message (with the details
        # that repeat it) passed gRPC's limit on trailers, so the caller got this.
        return f"the answer's trailers passed gRPC's size limit: {_normalized(outcome.message)}"
    return None


def _normalized(text: str) -> str:
    """A cause without the ids and numbers that make each occurrence differ."""
    text = re.sub(r"\b(?=[0-9a-f-]*\d)(?:[0-9a-f]{32}|[0-9a-f-]{36})\b", "<id>", text)
    return re.sub(r"\d+", "N", text.splitlines()[0] if text else "")[:200]


def exceptions_logged(logged: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """request id -> the exception the server logged for an INTERNAL answer."""
    found = {}
    for entry in logged:
        exc = entry.get("exc_info")
        if entry.get("event") == "rpc" and isinstance(exc, BaseException):
            found[entry["request_id"]] = f"{type(exc).__name__}: {exc}"
    return found
