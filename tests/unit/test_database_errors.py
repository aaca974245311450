"""Database failures that are no bug, and what a call answers for them
(database.domain_error): never INTERNAL."""

import asyncpg

from cairn_server.common import database
from cairn_server.common.errors import Unavailable


def test_a_read_only_database_is_unavailable() -> None:
    error = asyncpg.exceptions.ReadOnlySQLTransactionError(
        "cannot execute INSERT in a read-only transaction"
    )
    answer = database.domain_error(error)
    assert isinstance(answer, Unavailable) and answer.reason == "DATABASE_READ_ONLY"


def test_a_pool_closing_under_work_is_a_shutdown() -> None:
    for message in ("pool is closing", "pool is closed"):
        answer = database.domain_error(asyncpg.InterfaceError(message))
        assert isinstance(answer, Unavailable) and answer.reason == "SHUTTING_DOWN"


def test_other_interface_errors_are_no_shutdown() -> None:
    answer = database.domain_error(asyncpg.InterfaceError("cannot perform operation"))
    assert answer is None


def test_a_lock_not_granted_in_time_is_a_busy_database() -> None:
    """A lock_timeout cut a write that waited for another's lock: INTERNAL before."""
    error = asyncpg.exceptions.LockNotAvailableError("canceling statement due to lock timeout")
    answer = database.domain_error(error)
    assert isinstance(answer, Unavailable) and answer.reason == "DATABASE_BUSY"
