"""The artifact service's backend threads: daemon threads, never more than their
number, every call run once with its own result or error, in order when one thread
is free."""

from __future__ import annotations

import threading

import pytest

from cairn_server.artifacts.threads import _DaemonThreads


def test_more_calls_than_threads_all_run_on_daemon_threads_within_the_bound() -> None:
    pool = _DaemonThreads(3, "test-threads")
    release = threading.Event()
    seen: set[threading.Thread] = set()

    def call(i: int) -> int:
        release.wait(timeout=10)
        seen.add(threading.current_thread())
        return i * i

    futures = [pool.submit(call, i) for i in range(20)]
    release.set()
    assert [future.result(timeout=10) for future in futures] == [i * i for i in range(20)]
    assert len(seen) == 3
    assert all(thread.daemon for thread in seen)


def test_an_error_is_the_calls_own_and_the_thread_serves_on() -> None:
    pool = _DaemonThreads(1, "test-threads")
    failed = pool.submit(int, "not a number")
    with pytest.raises(ValueError):
        failed.result(timeout=10)
    assert pool.submit(int, "7").result(timeout=10) == 7


def test_a_call_cancelled_before_it_ran_never_runs() -> None:
    pool = _DaemonThreads(1, "test-threads")
    release, ran = threading.Event(), list[str]()
    blocking = pool.submit(release.wait, 10)
    waiting = pool.submit(ran.append, "ran")
    assert waiting.cancel()
    release.set()
    assert blocking.result(timeout=10) is True
    assert pool.submit(len, "after").result(timeout=10) == 5
    assert ran == []
