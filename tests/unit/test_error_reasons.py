"""Every reason the services raise is a value of cairn.common.v1.ErrorReason, so
clients in any language can rely on the contract's list."""

import re

import asyncpg
import grpc

from cairn.common.v1 import common_pb2
from cairn_server.common import database
from tests.conftest import repo_root

_RAISED = re.compile(
    r"(?:NotFound|AlreadyExists|InvalidArgument|FailedPrecondition|OutOfRange|PermissionDenied|"
    r"Unauthenticated|ResourceExhausted|DataLoss|Unavailable|not_found|_status)\(\s*\"([A-Z_]+)\""
)
_FIELD_REASON = re.compile(r"invalid_field\([^()]*?,\s*\"([A-Z_]+)\"\s*\)", re.S)


def _declared() -> set[str]:
    values = common_pb2.ErrorReason.DESCRIPTOR.values
    return {value.name.removeprefix("ERROR_REASON_") for value in values}


def test_every_raised_reason_is_declared() -> None:
    used: set[str] = set()
    for path in (repo_root() / "services").rglob("*.py"):
        text = path.read_text()
        used |= set(_RAISED.findall(text)) | set(_FIELD_REASON.findall(text))
    assert used, "the pattern found no reasons at all"
    assert used - _declared() == set()


def test_transactions_rolled_back_in_a_conflict_answer_aborted() -> None:
    """A deadlock victim or a serialization failure applied nothing: ABORTED, call again,
    never INTERNAL."""
    for exc in (
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
        asyncpg.exceptions.SerializationError("could not serialize access"),
    ):
        answer = database.domain_error(exc)
        assert answer is not None
        assert (answer.code, answer.reason) == (grpc.StatusCode.ABORTED, "TRANSACTION_CONFLICT")


def test_a_database_out_of_disk_or_memory_answers_unavailable() -> None:
    """SQLSTATE class 53: nothing was applied, and a client that retries UNAVAILABLE
    (ActiveRun's sender among them) keeps its points to send again, where INTERNAL made
    it give up."""
    for exc in (
        asyncpg.exceptions.DiskFullError("could not extend file"),
        asyncpg.exceptions.OutOfMemoryError("out of memory"),
    ):
        answer = database.domain_error(exc)
        assert answer is not None
        assert (answer.code, answer.reason) == (
            grpc.StatusCode.UNAVAILABLE,
            "DATABASE_OUT_OF_RESOURCES",
        )
    too_many = database.domain_error(asyncpg.exceptions.TooManyConnectionsError("sorry"))
    assert too_many is not None and too_many.reason == "DATABASE_UNAVAILABLE"
