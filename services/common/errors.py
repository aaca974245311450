"""Domain errors: what stores and servicers raise, free of gRPC and protobuf.

Each class names the gRPC status code it becomes; the one server interceptor
(`interceptor.py`) does the conversion, adding `google.rpc.ErrorInfo` with the
stable `reason` and `google.rpc.BadRequest` with the field violations.
Reasons are the names of `cairn.common.v1.ErrorReason` values without their prefix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request, as google.rpc.BadRequest reports it."""

    field: str
    description: str


class DomainError(Exception):
    """An expected failure with a status code, a stable reason and a message for people."""

    code = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[FieldViolation] = (),
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata = dict(metadata or {})
        self.violations = tuple(violations)


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(DomainError):
    code = grpc.StatusCode.ABORTED


class OutOfRange(DomainError):
    code = grpc.StatusCode.OUT_OF_RANGE


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DataLoss(DomainError):
    code = grpc.StatusCode.DATA_LOSS


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE


def invalid_field(
    field: str, description: str, reason: str = "INVALID_ARGUMENT"
) -> InvalidArgument:
    """The usual error for one bad request field."""
    return InvalidArgument(
        reason, f"{field}: {description}", violations=[FieldViolation(field, description)]
    )
