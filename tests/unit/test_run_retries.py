"""An ActiveRun's retries through an outage: each wait drawn from the upper half of the
doubling one, so runs refused together by one restart do not all come back together."""

from __future__ import annotations

import random

import pytest

from cairn._clients import run_retries
from cairn.exceptions import AbortedError, CairnError, InvalidArgumentError, UnavailableError

FAILURES = 8


async def _waits_of_one_outage(
    monkeypatch: pytest.MonkeyPatch,
    refusal: CairnError | None = None,
) -> list[float]:
    """The waits of a call refused FAILURES times, then stored."""
    waits: list[float] = []
    refusals = iter(range(FAILURES))

    async def call() -> str:
        if next(refusals, None) is not None:
            raise refusal or UnavailableError("the server restarts")
        return "stored"

    async def recorded(wait: float) -> None:
        waits.append(wait)

    with monkeypatch.context() as patched:
        patched.setattr(run_retries.asyncio, "sleep", recorded)
        assert await run_retries.retrying(call) == "stored"
    return waits


async def test_retry_waits_double_within_their_upper_half(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits = await _waits_of_one_outage(monkeypatch)
    assert len(waits) == FAILURES
    full = run_retries.FIRST_BACKOFF_SECONDS
    for wait in waits:
        assert full / 2 <= wait <= full
        full = min(full * 2, run_retries.MAX_BACKOFF_SECONDS)


async def test_two_runs_refused_together_wait_differently(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = await _waits_of_one_outage(monkeypatch)
    second = await _waits_of_one_outage(monkeypatch)
    assert first != second


async def test_retry_waits_neither_follow_nor_move_the_random_modules_sequence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two training scripts seeding random alike waited alike, and the numbers a
    script drew after an outage were not those its seed gives."""
    random.seed(42)
    first = await _waits_of_one_outage(monkeypatch)
    drawn_after = random.random()
    random.seed(42)
    second = await _waits_of_one_outage(monkeypatch)
    assert first != second
    random.seed(42)
    assert random.random() == drawn_after


async def test_a_run_waits_out_transaction_conflicts_as_outages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deadlock's victim applied nothing and is sent again; when the transport's own
    attempts ran out under lasting contention, the run took it for a lasting failure
    and stopped its sends. Other ABORTED reasons still are."""
    conflict = AbortedError("rolled back", reason="TRANSACTION_CONFLICT")
    assert len(await _waits_of_one_outage(monkeypatch, conflict)) == FAILURES
    for lasting in (AbortedError("changed", reason="OBJECT_CHANGED"), InvalidArgumentError("x")):
        with pytest.raises(type(lasting)):
            await _waits_of_one_outage(monkeypatch, lasting)
