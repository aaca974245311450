"""A client closed by one task while others use it: each caller gets its answer or
ClientClosedError, and a run being logged to ends, never waits for ever. grpc cancels
the calls of a closed channel, and its bare CancelledError passed `except CairnError`
by, stopped a run's sender as if cancelled, and left its logger waiting."""

import asyncio
import logging
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

import cairn
from cairn import sync
from cairn._clients.active_run import ActiveRun
from cairn._clients.journal import Journal
from cairn.exceptions import ClientClosedError
from cairn.types import RunOperations, RunStatus
from tests.conftest import eventually
from tests.proxy import FreezingProxy


@pytest.fixture
async def own(server_port: int) -> AsyncIterator[cairn.TrackingClient]:
    """A client of the test's own, which the test closes."""
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as client:
        yield client


async def _waiting_for(pool: asyncpg.Pool) -> bool:
    """Whether a statement waits for a run's row, which the test holds."""
    return bool(
        await pool.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE wait_event_type = 'Lock' AND query LIKE '%tracking.runs%'"""
        )
    )


async def test_a_call_in_flight_when_another_task_closes_the_client_gets_client_closed(
    own: cairn.TrackingClient, experiment_id: str, pool: asyncpg.Pool
) -> None:
    run_id = (await own.create_run(experiment_id)).info.run_id
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT 1 FROM tracking.runs WHERE run_id = $1 FOR UPDATE", uuid.UUID(run_id)
        )
        call = asyncio.create_task(own.log_metric(run_id, "m", 1.0))
        await eventually(lambda: _waiting_for(pool), what="the call waits")
        await own.close()
        with pytest.raises(ClientClosedError):
            await call


async def test_a_run_whose_client_is_closed_meanwhile_raises_client_closed(
    own: cairn.TrackingClient, experiment_id: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    run = own.start_run(
        experiment_id, batch_size=10, max_buffered=20, flush_timeout=5, journal_dir=tmp_path
    )
    with pytest.raises(ClientClosedError):  # the block's end raises it too
        await _log_while_closed(own, run, pool)
    # What was not stored is in the run's journal, with the status the code chose: the
    # client's close, like an outage, makes no run FAILED.
    assert run.journal is not None and run.journal.parent == tmp_path
    assert Journal.read(run.journal).status == RunStatus.FINISHED


async def _log_while_closed(own: cairn.TrackingClient, run: ActiveRun, pool: asyncpg.Pool) -> None:
    async with run:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT 1 FROM tracking.runs WHERE run_id = $1 FOR UPDATE",
                uuid.UUID(run.run_id),
            )
            for step in range(10):  # a batch, which the sender sends and waits on
                await run.log_metric("m", 1.0, step=step)
            await eventually(lambda: _waiting_for(pool), what="the send waits")
            await own.close()
        with pytest.raises(ClientClosedError):
            async with asyncio.timeout(30):  # it waited for room for ever
                for step in range(10, 100):
                    await run.log_metric("m", 1.0, step=step)
        with pytest.raises(ClientClosedError):
            await run.flush()


async def test_a_run_whose_client_is_closed_as_it_ends_keeps_its_status_in_its_journal(
    own: cairn.TrackingClient, experiment_id: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """The end's set_terminated cut short by the close wrote no journal: the run stayed
    RUNNING, with nothing for `cairn sync` to end it with."""
    run = own.start_run(experiment_id, journal_dir=tmp_path)
    async with pool.acquire() as conn, conn.transaction():

        async def ended() -> None:
            async with run:
                await run.log_metric("m", 1.0)
                await run.flush()
                await conn.execute(  # the end's set_terminated waits for the row
                    "SELECT 1 FROM tracking.runs WHERE run_id = $1 FOR UPDATE",
                    uuid.UUID(run.run_id),
                )

        ending = asyncio.create_task(ended())
        await eventually(lambda: _waiting_for(pool), what="the run's end waits")
        await own.close()
        with pytest.raises(ClientClosedError):
            await ending
    assert run.journal is not None
    assert Journal.read(run.journal).status == RunStatus.FINISHED


async def test_closing_any_client_of_the_channel_sends_the_queued_writes_first(
    server_port: int, run_id: str, tracking: cairn.TrackingClient
) -> None:
    """Only the tracking client flushed the queue: closing the registry's view of a
    cairn.Client dropped the writes the tracking view had queued."""
    client = cairn.Client(f"http://127.0.0.1:{server_port}")
    for i in range(20):
        await client.tracking.set_tag(run_id, f"t{i}", "1", synchronous=False)
    await client.registry.close()
    assert len((await tracking.get_run(run_id)).data.tags) == 20


async def test_an_active_run_is_entered_once(own: cairn.TrackingClient, experiment_id: str) -> None:
    """Entered again, it started a new run that refused every point; entered twice at
    once, two runs, one of them left RUNNING for good."""
    run = own.start_run(experiment_id)
    entries = await asyncio.gather(run.__aenter__(), run.__aenter__(), return_exceptions=True)
    assert [type(e) for e in entries] == [type(run), RuntimeError]
    await run.__aexit__(None, None, None)
    with pytest.raises(RuntimeError, match="start_run again"):
        async with run:
            pass
    runs = await own.search_runs([experiment_id])
    assert [r.info.status for r in runs] == [RunStatus.FINISHED]


async def test_a_wait_given_up_leaves_the_queued_writes_to_be_sent(
    own: cairn.TrackingClient, run_id: str, pool: asyncpg.Pool, tracking: cairn.TrackingClient
) -> None:
    """MLflow's wait() never cancels the writes it waits for. Cancelling it (a timeout,
    Ctrl-C in the sync facade) cancelled them, and the queue's sender then died on the
    cancelled write's result: every write queued after it stayed unsent, and flush
    said nothing."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT FROM tracking.runs WHERE run_id = $1 FOR UPDATE", run_id)
        first = await own.log_metric(run_id, "m", 0.0, step=0, synchronous=False)
        assert first is not None  # as synchronous=False answers
        await eventually(lambda: _waiting_for(pool), what="the first write held")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(first.wait(), timeout=0.1)
    later = [await own.log_metric(run_id, "m", 1.0, step=s, synchronous=False) for s in (1, 2)]
    await own.flush_async_logging()
    assert all(ops is not None and ops.done() for ops in later)
    history = await tracking.get_metric_history(run_id, "m")
    assert [point.step for point in history] == [0, 1, 2]


class _Logger:
    """A training loop's task logging with synchronous=False faster than the writes are
    sent: two queued for each one sent, so the queue never empties."""

    def __init__(self, client: cairn.TrackingClient, run_id: str) -> None:
        self.queued = 0
        self.last: RunOperations | None = None
        self.forty_queued = asyncio.Event()  # half of them still waiting to be sent
        self.task = asyncio.create_task(self._log_on(client, run_id))

    async def _log_on(self, client: cairn.TrackingClient, run_id: str) -> None:
        while True:
            sent = await self._queue(client, run_id)
            await self._queue(client, run_id)
            await sent.wait()

    async def _queue(self, client: cairn.TrackingClient, run_id: str) -> RunOperations:
        self.last = await client.log_metric(run_id, "loss", 1.0, 0, self.queued, False)
        assert self.last is not None  # as synchronous=False answers
        self.queued += 1
        if self.queued == 40:
            self.forty_queued.set()
        return self.last


async def test_close_sends_what_was_queued_before_it_while_a_task_logs_on(
    own: cairn.TrackingClient, run_id: str, tracking: cairn.TrackingClient
) -> None:
    """close() waited for every write, those queued while it waited too: it never
    returned while a task went on logging with synchronous=False (not done after 20 s,
    1.2 million writes taken meanwhile), and every other call waited on it."""
    logger = _Logger(own, run_id)
    try:
        async with asyncio.timeout(30):
            await logger.forty_queued.wait()
            await own.close()
        with pytest.raises(ClientClosedError):
            await logger.task  # its first write after close() began
    finally:
        logger.task.cancel()
    history = await tracking.get_metric_history(run_id, "loss")
    assert len(history) == logger.queued  # each write taken before the close was sent


async def test_flush_async_logging_waits_for_what_was_queued_when_called(
    own: cairn.TrackingClient, run_id: str
) -> None:
    """flush_async_logging() waited for the writes queued while it waited too, and never
    returned while a task went on logging with synchronous=False."""
    logger = _Logger(own, run_id)
    try:
        async with asyncio.timeout(30):
            await logger.forty_queued.wait()
            last = logger.last
            await own.flush_async_logging()
        assert last is not None and last.done()
        assert not logger.task.done()  # a flush, unlike a close, takes writes on
    finally:
        logger.task.cancel()  # what it queued meanwhile is sent as the client closes


async def test_a_sync_client_closes_while_another_thread_logs_on(
    server_port: int, run_id: str
) -> None:
    """A thread logging with synchronous=False kept the close of another thread from
    ever returning (not done after 15 s, 88,871 writes taken after it began)."""

    def close_while_logged_to() -> tuple[bool, list[str]]:
        client = sync.TrackingClient.insecure_connection("127.0.0.1", server_port)
        queued, ended = threading.Event(), []

        def log_on() -> None:
            try:
                for step in range(10**9):
                    client.log_metric(run_id, "loss", 1.0, 0, step, False)
                    if step == 100:
                        queued.set()
            except ClientClosedError as error:
                ended.append(type(error).__name__)

        logger = threading.Thread(target=log_on, daemon=True)
        logger.start()
        assert queued.wait(15)
        closer = threading.Thread(target=client.close, daemon=True)
        closer.start()
        closer.join(15)
        logger.join(15)
        return closer.is_alive(), ended

    still_closing, ended = await asyncio.to_thread(close_while_logged_to)
    assert not still_closing
    assert ended == ["ClientClosedError"]


async def test_a_close_cut_short_reports_the_writes_not_sent_in_one_warning(
    server_port: int, run_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A close cancelled (a timeout) while writes waited on a server that did not answer
    closed the channel under the queue's sender, which went on: each write left failed
    ClientClosedError, an error no caller took, and no warning said they were not sent."""
    proxy = FreezingProxy(server_port)
    client = cairn.TrackingClient.insecure_connection("127.0.0.1", await proxy.start())
    try:
        await client.get_run(run_id)  # connected
        proxy.freeze()
        queued = [await client.log_param(run_id, f"p{k}", "v", False) for k in range(50)]
        with caplog.at_level(logging.WARNING, "cairn"):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.close(), timeout=0.5)
            await eventually(lambda: all(ops is not None and ops.done() for ops in queued))
    finally:
        await proxy.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("50 writes queued with synchronous=False were not sent")
    for ops in queued:  # cancelled, the writes given up read as sent
        assert ops is not None
        with pytest.raises(ClientClosedError):
            await ops.wait()


async def test_a_close_waiting_while_another_is_cut_short_says_what_was_not_sent(
    server_port: int, run_id: str
) -> None:
    """Of two closes at once, the one cut short gave up the writes the other still
    waited for, and that one returned as if they were all stored."""
    proxy = FreezingProxy(server_port)
    client = cairn.TrackingClient.insecure_connection("127.0.0.1", await proxy.start())
    try:
        await client.get_run(run_id)  # connected
        proxy.freeze()
        for k in range(5):
            await client.log_param(run_id, f"q{k}", "v", False)
        patient = asyncio.ensure_future(client.close())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.close(), timeout=0.5)
        with pytest.raises(ClientClosedError):
            await asyncio.wait_for(patient, 30)
    finally:
        await proxy.close()


_CTRL_C_IN_CLOSE = """
import asyncio, signal, sys, threading
sys.path.insert(0, {root!r})
from cairn import sync
from tests.proxy import FreezingProxy

loop = asyncio.new_event_loop()
threading.Thread(target=loop.run_forever, daemon=True).start()
proxy = FreezingProxy({port})
port = asyncio.run_coroutine_threadsafe(proxy.start(), loop).result()
client = sync.TrackingClient.insecure_connection("127.0.0.1", port)
client.get_run({run_id!r})  # connected
proxy.freeze()
for k in range(50):
    client.log_param({run_id!r}, f"p{{k}}", "v", False)
signal.signal(signal.SIGALRM, lambda *_: signal.raise_signal(signal.SIGINT))
signal.setitimer(signal.ITIMER_REAL, 0.5)  # Ctrl-C as the close waits
try:
    client.close()
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


async def test_ctrl_c_in_a_sync_close_reports_the_writes_not_sent_once(
    server_port: int, run_id: str
) -> None:
    """Ctrl-C in the close of a sync client whose writes waited on a server that did not
    answer printed an asyncio traceback for each write ("Future exception was never
    retrieved", 50 for 50 writes) and no warning saying they were not sent."""
    root = str(Path(__file__).resolve().parents[3])
    script = _CTRL_C_IN_CLOSE.format(root=root, port=server_port, run_id=run_id)
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.stdout == "interrupted\n", done.stderr[-3000:]
    assert done.stderr.count("Future exception was never retrieved") == 0
    assert done.stderr.count("writes queued with synchronous=False were not sent") == 1
    assert "50 writes queued with synchronous=False were not sent" in done.stderr
