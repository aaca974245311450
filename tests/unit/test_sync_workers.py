"""Workers, the sync facade loops' default executor: what is submitted runs and answers
through its future (errors too), on at most max_workers threads however much waits;
shutdown, or dropping them, ends them. tests/integration/test_sync_facade.py shows them
working on after the main thread ended, when every ThreadPoolExecutor had stopped."""

from __future__ import annotations

import gc
import threading

import pytest

from cairn._workers import Workers
from tests.conftest import eventually


def _worker_threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def test_results_and_errors_come_back_through_the_futures() -> None:
    workers = Workers(2, thread_name_prefix="test-answers")
    try:
        assert workers.submit(pow, 2, exp=10).result() == 1024
        with pytest.raises(ZeroDivisionError):
            workers.submit(divmod, 1, 0).result()
    finally:
        workers.shutdown()


def test_no_more_threads_than_max_workers_and_shutdown_ends_them() -> None:
    workers = Workers(3, thread_name_prefix="test-bounded")
    release = threading.Event()
    running = threading.Semaphore(0)

    def held(index: int) -> int:
        running.release()
        release.wait()
        return index

    futures = [workers.submit(held, index) for index in range(10)]
    for _ in range(3):
        running.acquire()  # three run at once, the rest wait for one of them
    assert len(_worker_threads("test-bounded")) == 3
    release.set()
    assert [f.result() for f in futures] == list(range(10))
    assert len(_worker_threads("test-bounded")) == 3
    workers.shutdown()
    assert _worker_threads("test-bounded") == []
    with pytest.raises(RuntimeError, match="after shutdown"):
        workers.submit(int)


async def test_workers_dropped_without_shutdown_end() -> None:
    workers = Workers(2, thread_name_prefix="test-dropped")
    assert workers.submit(int, 7).result() == 7
    del workers
    gc.collect()
    await eventually(lambda: _worker_threads("test-dropped") == [])
