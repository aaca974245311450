"""Errors raised by the Cairn client: one hierarchy under `CairnError`.

Every gRPC status code maps to one class; `from_grpc_error` builds the right one from
a failed call, with the stable `reason` of the server's `google.rpc.ErrorInfo`, its
metadata and any `google.rpc.BadRequest` field violations. The original gRPC error
stays available as `grpc_error`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import grpc
from google.protobuf import any_pb2, message
from google.rpc import error_details_pb2, status_pb2

if TYPE_CHECKING:
    from .types._operations import Operation

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


class CairnError(Exception):
    """Base of every error the client raises.

    Attributes:
        code: the gRPC status code.
        reason: the server's stable reason (e.g. "RUN_NOT_FOUND"), or None.
        message: what went wrong, for people.
        metadata: ErrorInfo metadata (e.g. "correlation_id" on INTERNAL errors).
        field_violations: (field, description) pairs for bad requests.
        grpc_error: the underlying gRPC error, when there is one.
    """

    grpc_status_code: ClassVar[grpc.StatusCode | None] = None

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        code: grpc.StatusCode | None = None,
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[tuple[str, str]] = (),
        grpc_error: grpc.RpcError | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.code = code or self.grpc_status_code or grpc.StatusCode.UNKNOWN
        self.metadata = dict(metadata or {})
        self.field_violations = list(field_violations)
        self.grpc_error = grpc_error

    # ML cube's names for the same two facts.
    @property
    def error_code(self) -> str | None:
        return self.reason

    @property
    def error_message(self) -> str:
        return self.message

    def __str__(self) -> str:
        reason = f" [{self.reason}]" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"


class CancelledError(CairnError):
    grpc_status_code = grpc.StatusCode.CANCELLED


class UnknownError(CairnError):
    grpc_status_code = grpc.StatusCode.UNKNOWN


class InvalidArgumentError(CairnError, ValueError):
    grpc_status_code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(CairnError, TimeoutError):
    grpc_status_code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFoundError(CairnError, LookupError):
    grpc_status_code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(CairnError):
    grpc_status_code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDeniedError(CairnError):
    grpc_status_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhaustedError(CairnError):
    grpc_status_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(CairnError):
    grpc_status_code = grpc.StatusCode.FAILED_PRECONDITION


class AbortedError(CairnError):
    grpc_status_code = grpc.StatusCode.ABORTED


class OutOfRangeError(CairnError):
    grpc_status_code = grpc.StatusCode.OUT_OF_RANGE


class UnimplementedError(CairnError, NotImplementedError):
    grpc_status_code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(CairnError):
    grpc_status_code = grpc.StatusCode.INTERNAL


class UnavailableError(CairnError, ConnectionError):
    grpc_status_code = grpc.StatusCode.UNAVAILABLE


class DataLossError(CairnError):
    grpc_status_code = grpc.StatusCode.DATA_LOSS


class UnauthenticatedError(CairnError):
    grpc_status_code = grpc.StatusCode.UNAUTHENTICATED


# Devo ML Model Manager's names, for its users' `except` clauses.
ModelAlreadyExists = AlreadyExistsError
ModelNotFound = NotFoundError

_BY_CODE: dict[grpc.StatusCode, type[CairnError]] = {
    cls.grpc_status_code: cls
    for cls in CairnError.__subclasses__()
    if cls.grpc_status_code is not None
}


class ClientClosedError(FailedPreconditionError, RuntimeError):
    """A call on a client that was closed, or that another task or thread closed while
    the call ran (which the server may have answered, or not), or a sync client used in
    a process forked from the one that made it; `reason` is CLIENT_CLOSED. Make a new
    client."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="CLIENT_CLOSED")


class ForkedProcessError(FailedPreconditionError, RuntimeError):
    """A client made in a process forked while its parent had a client's gRPC
    connection open: gRPC's state, copied by the fork, cannot work in the child (its
    calls hung or crashed it); `reason` is FORKED_WITH_OPEN_CLIENT. Start such children
    with the "spawn" or "forkserver" method, or fork before any client exists or after
    closing them all."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="FORKED_WITH_OPEN_CLIENT")


class OperationFailedError(CairnError):
    """`wait_job_completion` found the operation FAILED; `operation` holds its errors.
    No call failed, so `code` is UNKNOWN and `reason` None."""

    def __init__(self, operation: Operation) -> None:
        super().__init__(f"{operation.name} failed: {'; '.join(operation.errors) or 'no reason'}")
        self.operation = operation

    def __str__(self) -> str:
        return self.message


class OperationTimeoutError(CairnError, TimeoutError):
    """The operation was not done when the wait's timeout passed; it may still finish
    (`operation` is how it was last seen). No call failed: `code` is DEADLINE_EXCEEDED,
    the wait's deadline, and `reason` None."""

    grpc_status_code = grpc.StatusCode.DEADLINE_EXCEEDED

    def __init__(self, operation: Operation, timeout: float) -> None:
        super().__init__(
            f"{operation.name} was still {operation.state.value} after {timeout:g} s "
            f"({operation.progress_done}/{operation.progress_total} done); wait again later"
        )
        self.operation = operation

    def __str__(self) -> str:
        return self.message


def error_class(code: grpc.StatusCode) -> type[CairnError]:
    """The exception class for a status code (CairnError for OK and anything unknown)."""
    return _BY_CODE.get(code, CairnError)


def from_grpc_error(error: grpc.RpcError) -> CairnError:
    """The CairnError for a failed call, with the server's reason and field violations."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = (error.details() if hasattr(error, "details") else None) or str(code.name)
    status = _rich_status(error)
    reason, metadata, violations = None, {}, []
    if status is not None:
        message = status.message or message
        for detail in status.details:
            info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
            if _unpacked(detail, info):
                reason, metadata = info.reason, dict(info.metadata)
            elif _unpacked(detail, bad):
                violations = [(v.field, v.description) for v in bad.field_violations]
    return error_class(code)(
        message,
        reason=reason,
        code=code,
        metadata=metadata,
        field_violations=violations,
        grpc_error=error,
    )


def _rich_status(error: grpc.RpcError) -> status_pb2.Status | None:
    """The error's google.rpc.Status, None without one. Details that do not parse (a
    proxy's trailer, a broken or hostile server) are passed over, here and in
    _unpacked: the error keeps its status code, which a DecodeError in its place lost."""
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except message.DecodeError:
                return None
    return None


def _unpacked(detail: any_pb2.Any, into: message.Message) -> bool:
    """Whether detail holds a message of into's type, now read into it."""
    if not detail.Is(into.DESCRIPTOR):
        return False
    try:
        return detail.Unpack(into)
    except message.DecodeError:
        return False


__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "CairnError",
    "CancelledError",
    "ClientClosedError",
    "DataLossError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "ForkedProcessError",
    "InternalError",
    "InvalidArgumentError",
    "ModelAlreadyExists",
    "ModelNotFound",
    "NotFoundError",
    "OperationFailedError",
    "OperationTimeoutError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "error_class",
    "from_grpc_error",
]
