"""start_run: buffered metrics sent in the background, the run's end status."""

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import NamedTuple

import asyncpg
import numpy as np
import pytest

import cairn
from cairn._clients import active_run
from cairn._clients.active_run import ActiveRun
from cairn._clients.journal import Journal
from cairn.exceptions import ClientClosedError, FailedPreconditionError, InvalidArgumentError
from cairn.types import Metric, RunInput, RunStatus
from cairn_server import catalog
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer
from tests.conftest import eventually, serving, with_overrides
from tests.proxy import StallingProxy


async def test_metrics_are_flushed_and_the_run_finishes(
    tracking: cairn.TrackingClient, experiment_id: str
) -> None:
    async with tracking.start_run(experiment_id, run_name="train", batch_size=100) as run:
        await run.log_param("lr", 0.01)
        for step in range(1050):
            await run.log_metric("loss", 1 / (step + 1), step=step)
        await run.flush()
        assert len(await tracking.get_metric_history(run.run_id, "loss")) == 1050
        await run.log_metric("loss", 0.0, step=1050)
    final = await tracking.get_run(run.run_id)
    assert final.info.status == RunStatus.FINISHED and final.info.end_time
    assert final.info.run_name == "train"
    assert final.data.params == {"lr": "0.01"}
    assert len(await tracking.get_metric_history(run.run_id, "loss")) == 1051


async def test_an_exception_marks_the_run_failed_after_flushing(tracking, experiment_id) -> None:
    with pytest.raises(RuntimeError, match="diverged"):
        async with tracking.start_run(experiment_id) as run:
            await run.log_metric("loss", float("nan"))
            raise RuntimeError("diverged")
    final = await tracking.get_run(run.run_id)
    assert final.info.status == RunStatus.FAILED
    assert len(await tracking.get_metric_history(run.run_id, "loss")) == 1


async def test_the_buffer_is_bounded(tracking, experiment_id) -> None:
    async with tracking.start_run(experiment_id, batch_size=10, max_buffered=20) as run:
        for step in range(200):
            await run.log_metric("m", step, step=step)
            assert run._batches.points <= 20
    assert len(await tracking.get_metric_history(run.run_id, "m")) == 200


async def test_a_failed_background_send_surfaces(tracking, experiment_id) -> None:
    """A send the background task could not make is raised by the run's next call,
    and again as the block ends."""
    with pytest.raises(FailedPreconditionError) as at_the_end:
        async with tracking.start_run(experiment_id, batch_size=5) as run:
            await tracking.delete_run(run.run_id)
            for step in range(10):
                await run.log_metric("m", step, step=step)
            await eventually(lambda: run._error is not None, what="the send failed")
            with pytest.raises(FailedPreconditionError) as next_call:
                await run.log_metric("m", 10, step=10)
    assert next_call.value.reason == at_the_end.value.reason == "RUN_DELETED"


@contextlib.asynccontextmanager
async def _run_without_its_server(
    config: Config, pool: asyncpg.Pool, name: str, journal_dir: Path, flush_timeout: float
) -> AsyncIterator[ActiveRun]:
    """A run begun, whose server has stopped since: its sends are refused."""
    async with serving(config, pool, ["tracking"]) as port:
        client = cairn.TrackingClient.insecure_connection("127.0.0.1", port)
        experiment_id = await client.create_experiment(name)
        run = client.start_run(experiment_id, journal_dir=journal_dir, flush_timeout=flush_timeout)
        await run.__aenter__()
    try:
        yield run
    finally:
        await client.close()


async def _cancel_its_end(run: ActiveRun) -> None:
    """Ends run and cancels its end once begun (waiting for its sends, refused)."""
    ending = asyncio.create_task(run.__aexit__(None, None, None))
    await eventually(lambda: run._ending, what="the run's end begun")
    ending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await ending


async def test_an_end_cut_short_keeps_what_is_unsent_in_the_journal(
    config: Config, pool: asyncpg.Pool, unique: str, tmp_path: Path
) -> None:
    """Cancelled while it ends (asyncio.run's Ctrl-C, the sync facade's too), a run keeps
    its unsent points and its end in the journal, as after an outage: KILLED, as a block
    cancelled ends, though this block itself ended well (its journal said FINISHED)."""
    async with _run_without_its_server(config, pool, f"cut-{unique}", tmp_path, 60) as run:
        await run.log_metric("loss", 0.5, step=1)  # waits in the buffer, its sends refused
        await _cancel_its_end(run)
    assert run.journal is not None
    kept = Journal.read(run.journal)
    assert (kept.run_id, kept.points, kept.status) == (run.run_id, 1, RunStatus.KILLED)


class _Ends(NamedTuple):
    """What the ends of runs below are made with."""

    config: Config
    pool: asyncpg.Pool
    port: int
    tracking: cairn.TrackingClient
    name: str
    journal_dir: Path


async def _ended_by_an_outage(ends: _Ends) -> None:
    async with _run_without_its_server(
        ends.config, ends.pool, ends.name, ends.journal_dir, 0.5
    ) as run:
        await run.log_metric("loss", 0.5)  # waits in the buffer, its sends refused
        await run.__aexit__(None, None, None)


async def _ended_by_a_cancellation(ends: _Ends) -> None:
    async with _run_without_its_server(
        ends.config, ends.pool, ends.name, ends.journal_dir, 60
    ) as run:
        await run.log_metric("loss", 0.5)
        await _cancel_its_end(run)


async def _ended_by_its_client_closed(ends: _Ends) -> None:
    client = cairn.TrackingClient.insecure_connection("127.0.0.1", ends.port)
    run = client.start_run(
        await client.create_experiment(ends.name),
        journal_dir=ends.journal_dir,
        flush_timeout=60,
        send_interval=3600,
    )
    with pytest.raises(ClientClosedError):
        async with run:
            await run.log_metric("loss", 0.5)
            await client.close()


async def _ended_by_an_error(ends: _Ends) -> None:
    run = ends.tracking.start_run(
        await ends.tracking.create_experiment(ends.name),
        journal_dir=ends.journal_dir,
        flush_timeout=60,
    )
    with pytest.raises(FailedPreconditionError):
        async with run:
            await run.log_metric("loss", 0.5)
            await ends.tracking.delete_run(run.run_id)


@pytest.mark.parametrize(
    ("ended", "cause"),
    [
        (_ended_by_an_outage, "in 0.5 s"),
        (_ended_by_a_cancellation, "as the run was cancelled"),
        (_ended_by_its_client_closed, "as its client was closed"),
        (_ended_by_an_error, "after an error retrying cannot fix (FAILED_PRECONDITION"),
    ],
    ids=["outage", "cancelled", "closed", "error"],
)
async def test_the_journal_warning_names_what_stopped_the_sends(
    config: Config,
    pool: asyncpg.Pool,
    server_port: int,
    tracking: cairn.TrackingClient,
    unique: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    ended: Callable[[_Ends], Awaitable[None]],
    cause: str,
) -> None:
    """A run whose client was closed in its block ended at once, then warned "1 points
    could not be sent in 60 s": every end blamed flush_timeout, also a cancelled one and
    one stopped by an error retrying cannot fix (a deleted run)."""
    with caplog.at_level(logging.WARNING, "cairn"):
        await ended(_Ends(config, pool, server_port, tracking, f"ends-{unique}", tmp_path))
    [warning] = [message for message in caplog.messages if "could not be sent" in message]
    assert f": 1 points could not be sent {cause}" in warning
    assert "cairn sync" in warning


async def test_numpy_steps_reach_the_journal_of_an_outage(
    config: Config, pool: asyncpg.Pool, unique: str, tmp_path: Path
) -> None:
    """`for step in np.arange(n)`: numpy integers send well, and the journal written
    when they cannot be sent keeps them too (json cannot write a numpy integer)."""
    async with _run_without_its_server(config, pool, f"np-{unique}", tmp_path, 0.5) as run:
        for step in np.arange(3):  # the points wait in the buffer
            await run.log_metric("loss", 0.5, step=step, timestamp=np.int64(1000) + step)  # type: ignore[arg-type]
        await run.__aexit__(None, None, None)
    assert run.journal is not None
    [(_, kept)] = Journal.read(run.journal).batches
    assert [(m.step, m.timestamp) for m in kept] == [(0, 1000), (1, 1001), (2, 1002)]


async def test_a_stored_batch_with_a_computed_nan_replays_from_the_journal(
    tracking: cairn.TrackingClient, run_id: str, tmp_path: Path
) -> None:
    """A batch stored before its answer was lost stays in the journal under its request
    id. Its NaN came from arithmetic (sign bit set on x86); the journal's JSON brings it
    back as another NaN, and the replay is still that batch's repeat."""
    computed_nan = float("inf") * 0
    batch = [Metric("loss", 0.5, 1000, 0), Metric("loss", computed_nan, 1001, 1)]
    await tracking.log_batch(run_id, batch, request_id=f"in-flight-{run_id}")
    Journal(run_id, tracking.project, batches=[(f"in-flight-{run_id}", batch)]).write(tmp_path)
    assert await tracking.sync_journal(tmp_path) == 2
    assert list(tmp_path.iterdir()) == []
    history = await tracking.get_metric_history(run_id, "loss")
    assert [m.step for m in history] == [0, 1]  # stored once


async def test_a_file_that_is_no_journal_is_named_and_the_others_are_stored(
    tracking: cairn.TrackingClient,
    run_id: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A journal cut short (a full disk) stopped the whole sync with a bare JSON error,
    and the good journals beside it were not sent."""
    good = Journal(run_id, tracking.project, batches=[("j-1", [Metric("synced", 1.0, 5, 0)])])
    good.write(tmp_path)
    (tmp_path / ("0" * 32 + ".jsonl")).write_text("")
    with pytest.raises(InvalidArgumentError) as refused:
        await tracking.sync_journal(tmp_path)
    assert refused.value.reason == "INVALID_JOURNAL" and "0" * 32 in refused.value.message
    # The count of what was sent, which the error cannot carry, is logged.
    assert "sent 1 points; 1 journals not stored, kept to sync again" in caplog.messages
    assert [m.value for m in await tracking.get_metric_history(run_id, "synced")] == [1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["0" * 32 + ".jsonl"]  # kept, to look at
    # Where no run ever needed a journal, there is nothing to send.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "never-used"))
    assert await tracking.sync_journal() == 0


@pytest.mark.parametrize(
    "bad",
    [
        b"\xff\xfe" + b'{"run_id": 1}\n',  # not UTF-8
        b"[" * 100_000 + b"]" * 100_000 + b"\n",  # nested deeper than Python's stack
    ],
    ids=["not-utf-8", "nested-deep"],
)
async def test_any_file_that_is_no_journal_is_named_and_the_others_are_stored(
    tracking: cairn.TrackingClient, run_id: str, tmp_path: Path, bad: bytes
) -> None:
    """A file not in UTF-8 or nested deep stopped the whole sync with a bare
    UnicodeDecodeError or RecursionError naming no file, and the good journal after it
    was never sent."""
    Journal(run_id, tracking.project, batches=[("j-1", [Metric("synced", 1.0, 5, 0)])]).write(
        tmp_path
    )
    (tmp_path / ("0" * 32 + ".jsonl")).write_bytes(bad)  # first in the folder's order
    with pytest.raises(InvalidArgumentError) as refused:
        await tracking.sync_journal(tmp_path)
    assert refused.value.reason == "INVALID_JOURNAL" and "0" * 32 in refused.value.message
    assert [m.value for m in await tracking.get_metric_history(run_id, "synced")] == [1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["0" * 32 + ".jsonl"]


async def test_a_folder_named_as_a_journal_is_passed_over(
    tracking: cairn.TrackingClient, run_id: str, tmp_path: Path
) -> None:
    """A directory named *.jsonl stopped the whole sync with "[Errno 21] Is a
    directory", and the good journal after it was never sent."""
    Journal(run_id, tracking.project, batches=[("j-1", [Metric("synced", 1.0, 5, 0)])]).write(
        tmp_path
    )
    (tmp_path / ("0" * 32 + ".jsonl")).mkdir()
    assert await tracking.sync_journal(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["0" * 32 + ".jsonl"]


async def test_a_step_past_64_bits_is_refused_when_logged_not_with_its_batch(
    tracking: cairn.TrackingClient, experiment_id: str
) -> None:
    """Buffered as given, it failed its whole batch later (the valid points with it),
    and the run's journal could never be replayed."""
    async with tracking.start_run(experiment_id) as run:
        await run.log_metric("kept", 1.0, step=1)
        with pytest.raises(InvalidArgumentError) as refused:
            await run.log_metric("kept", 2.0, step=2**70)
        assert refused.value.message.startswith("step: ")
    assert [m.step for m in await tracking.get_metric_history(run.run_id, "kept")] == [1]


@pytest.mark.parametrize("key", ["bad ", "x" * 251, "a\nb", "a\udc80", 7])
async def test_a_key_the_server_refuses_is_refused_when_logged_not_with_its_batch(
    tracking: cairn.TrackingClient, experiment_id: str, key: object
) -> None:
    """Buffered, it failed its batch and every later one, the good points with them,
    and `cairn sync` of the journal failed the same way each time."""
    async with tracking.start_run(experiment_id) as run:
        await run.log_metric("good", 1.0, step=1)
        with pytest.raises(InvalidArgumentError) as refused:
            await run.log_metric(key, 1.0)  # type: ignore[arg-type]
        assert refused.value.message.startswith("key: ")
        await run.log_metric("good", 2.0, step=2)
    assert [m.step for m in await tracking.get_metric_history(run.run_id, "good")] == [1, 2]
    assert (await tracking.get_run(run.run_id)).info.status == RunStatus.FINISHED


async def test_log_metrics_buffers_all_its_points_or_none(
    tracking: cairn.TrackingClient, experiment_id: str
) -> None:
    """The points before a refused one were buffered, so the call sent again after its
    error stored them twice."""
    async with tracking.start_run(experiment_id) as run:
        with pytest.raises(InvalidArgumentError):
            await run.log_metrics({"a": 1.0, "bad ": 2.0, "b": 3.0})
        await run.log_metrics({"a": 1.0, "b": 3.0})
    for key in ("a", "b"):
        assert len(await tracking.get_metric_history(run.run_id, key)) == 1


async def test_two_syncs_of_one_folder_store_each_journal_once(
    tracking: cairn.TrackingClient, experiment_id: str, tmp_path: Path
) -> None:
    """The second used to fail on a file the first had stored and removed meanwhile
    (a bare FileNotFoundError, which also stopped it syncing the rest)."""
    runs = [(await tracking.create_run(experiment_id)).info.run_id for _ in range(12)]
    for run_id in runs:
        batches = [
            (f"{run_id}-{n}", [Metric("loss", 1.0, 1, 10 * n + s) for s in range(10)])
            for n in range(5)
        ]
        journal = Journal(run_id, tracking.project, batches=batches)
        journal.status = RunStatus.FINISHED
        journal.write(tmp_path)
    sent = await asyncio.gather(tracking.sync_journal(tmp_path), tracking.sync_journal(tmp_path))
    assert sum(sent) == 12 * 50  # each file counted by the sync that stored it
    assert list(tmp_path.iterdir()) == []
    for run_id in runs:
        assert len(await tracking.get_metric_history(run_id, "loss")) == 50
        assert (await tracking.get_run(run_id)).info.status == RunStatus.FINISHED


async def test_buffered_points_are_sent_every_send_interval(
    tracking: cairn.TrackingClient, experiment_id: str
) -> None:
    """Not only once a batch is full: a process killed meanwhile lost them all."""
    async with tracking.start_run(experiment_id, send_interval=0.2) as run:
        for step in range(5):  # far from a batch of 10,000
            await run.log_metric("loss", 1.0 / (step + 1), step)

        async def sent() -> bool:
            return len(await tracking.get_metric_history(run.run_id, "loss")) == 5

        await eventually(sent, what="the buffered points sent while the run goes on")
    with pytest.raises(ValueError):
        tracking.start_run(experiment_id, send_interval=0)


async def test_a_run_with_nothing_to_send_waits_without_spinning(
    tracking: cairn.TrackingClient, experiment_id: str
) -> None:
    """An idle run woke every send_interval with nothing to send: with 1 microsecond
    its sender spun a core for as long as the run lasted."""
    async with tracking.start_run(experiment_id, send_interval=1e-6) as run:
        await run.log_metric("loss", 0.5)
        await run.flush()
        cpu, window = time.thread_time(), 0.5
        await asyncio.sleep(window)  # a window measured, not a condition waited for
        assert time.thread_time() - cpu < window / 5
        await run.log_metric("loss", 0.25, step=1)  # and what comes next still goes

        async def sent() -> bool:
            return len(await tracking.get_metric_history(run.run_id, "loss")) == 2

        await eventually(sent, what="the point logged after the idle time sent")


async def test_points_logged_as_the_block_ends_are_stored_or_refused(
    tracking: cairn.TrackingClient, experiment_id: str
) -> None:
    """Another task logging as the block ended was answered, and its points dropped:
    the buffer took them after the run's last send, and a flush waited for ever."""
    accepted = 0

    async def late(run: ActiveRun) -> None:
        nonlocal accepted
        for step in range(100_000):
            try:
                await run.log_metric("late", 1.0, step=step)
                accepted += 1
                await run.flush()  # stored before the next: the block goes on meanwhile
            except RuntimeError:
                return

    async with tracking.start_run(experiment_id) as run:
        logging = asyncio.create_task(late(run))
        await eventually(lambda: accepted > 100, what="the task logs")
    await asyncio.wait_for(logging, 30)
    with pytest.raises(RuntimeError, match="has ended"):
        await run.flush()
    assert len(await tracking.get_metric_history(run.run_id, "late")) == accepted


async def test_a_server_taking_the_least_message_stores_a_run_of_large_batches(
    config: Config, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """A batch of 100,000 points, as batch_size allows, took more than 1 MiB: a server
    given that least CAIRN_MAX_MESSAGE_BYTES refused it as too large, which was retried
    as a passing limit until the run's end, then journaled for a sync that failed alike;
    the block ended without an error and stored nothing."""
    async with (
        serving(config, pool, ["tracking"], max_message_bytes=1024 * 1024) as port,
        cairn.TrackingClient.insecure_connection("127.0.0.1", port) as client,
    ):
        experiment_id = await client.create_experiment(f"least-message-{tmp_path.name}")
        points = 100_000
        async with client.start_run(
            experiment_id, batch_size=points, journal_dir=tmp_path, flush_timeout=20
        ) as run:
            for step in range(points):
                await run.log_metric("loss", 0.5, step=step)
        assert run.journal is None
        history = await client.get_metric_history(run.run_id, "loss")
        assert [point.step for point in history] == list(range(points))


async def test_a_run_whose_inputs_are_refused_ends_failed(tracking, experiment_id) -> None:
    """The inputs are logged as the block is entered, after the run is made: refused,
    they raised from the entry, no end came, and the run stayed RUNNING."""
    too_long = RunInput(uri="s3://bucket/" + "x" * 3000, kind="dataset", name="d")
    run = tracking.start_run(experiment_id, used_artifacts=[too_long])
    with pytest.raises(InvalidArgumentError):
        async with run:
            raise AssertionError("the block is not entered")
    assert (await tracking.get_run(run.run_id)).info.status == RunStatus.FAILED


async def test_inputs_are_logged_once_the_server_is_back(
    config: Config,
    pool: asyncpg.Pool,
    unique: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Creating the run is retried through an outage, logging its inputs was not: a
    server gone between the two raised UNAVAILABLE from the entry and left the run
    RUNNING. Now the inputs are retried too, under one request id (stored once)."""
    client, port = await _gone_once_a_run_is_made(config, pool, monkeypatch)

    async def come_back() -> CairnServer:
        await eventually(lambda: "retrying in" in caplog.text, what="a retry of the inputs")
        return await _started_again(config, pool, port)

    caplog.set_level(logging.INFO, logger="cairn")
    data = RunInput(uri="s3://bucket/data.csv", kind="dataset", name="d")
    try:
        experiment_id = await client.create_experiment(f"inputs-{unique}")
        returning = asyncio.create_task(come_back())
        async with client.start_run(experiment_id, used_artifacts=[data]) as run:
            await run.log_metric("m", 1.0)
        stored = await client.get_run(run.run_id)
    finally:
        await client.close()
        await (await returning).stop(grace=1.0)
    assert stored.info.status == RunStatus.FINISHED
    assert [(i.uri, i.kind) for i in stored.inputs] == [(data.uri, data.kind)]


@pytest.mark.parametrize("stop", ["cancel", "close"])
async def test_a_start_stopped_while_its_inputs_wait_keeps_its_end_in_the_journal(
    config: Config,
    pool: asyncpg.Pool,
    unique: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    stop: str,
) -> None:
    """A start cancelled (or its client closed) while its inputs were retried through an
    outage raised from the entry with no journal and no end: the run stayed RUNNING.
    Now its end, KILLED, is journaled, and a sync once the server is back stores it."""
    client, port = await _gone_once_a_run_is_made(config, pool, monkeypatch)
    caplog.set_level(logging.INFO, logger="cairn")
    data = RunInput(uri="s3://bucket/data.csv", kind="dataset", name="d")
    experiment_id = await client.create_experiment(f"stopped-{unique}")
    run = client.start_run(experiment_id, used_artifacts=[data], journal_dir=tmp_path)
    entering = asyncio.create_task(run.__aenter__())
    await eventually(lambda: "retrying in" in caplog.text, what="a retry of the inputs")
    if stop == "cancel":
        entering.cancel()
    else:
        await client.close()
    with pytest.raises(asyncio.CancelledError if stop == "cancel" else ClientClosedError):
        await entering
    await client.close()
    assert run.journal is not None and run.journal.exists()
    again = await _started_again(config, pool, port)
    try:
        async with cairn.TrackingClient.insecure_connection("127.0.0.1", port) as back:
            assert await back.sync_journal(tmp_path) == 0  # points: none, only the end
            stored = await back.get_run(run.run_id)
    finally:
        await again.stop(grace=1.0)
    assert stored.info.status == RunStatus.KILLED
    assert not run.journal.exists()


async def test_a_start_stopped_with_no_journal_to_write_still_raises_its_stop(
    config: Config,
    pool: asyncpg.Pool,
    unique: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its journal's folder under a file: the cancelled start raised NotADirectoryError
    in place of CancelledError (which asyncio.timeout and TaskGroups wait for), and told
    nothing of what it could not keep."""
    client, _ = await _gone_once_a_run_is_made(config, pool, monkeypatch)
    caplog.set_level(logging.INFO, logger="cairn")
    experiment_id = await client.create_experiment(f"nowhere-{unique}")
    (tmp_path / "a-file").write_text("")
    data = RunInput(uri="s3://bucket/data.csv", kind="dataset", name="d")
    run = client.start_run(
        experiment_id, used_artifacts=[data], journal_dir=tmp_path / "a-file" / "journal"
    )
    entering = asyncio.create_task(run.__aenter__())
    await eventually(lambda: "retrying in" in caplog.text, what="a retry of the inputs")
    entering.cancel()
    try:
        with pytest.raises(asyncio.CancelledError):
            await entering
    finally:
        await client.close()
    assert "its journal could not be written" in caplog.text


async def _gone_once_a_run_is_made(
    config: Config, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> tuple[cairn.TrackingClient, int]:
    """A client of a tracking server that stops as soon as it made a run, before the
    run's inputs are logged, and the server's port."""
    first = CairnServer(config, catalog.select(["tracking"]), pool)
    port = await first.start()
    client = cairn.TrackingClient.insecure_connection("127.0.0.1", port)
    create = client.create_run

    async def create_then_stop(*args: object, **kwargs: object) -> object:
        made = await create(*args, **kwargs)  # type: ignore[arg-type]
        await first.stop(grace=0.1)
        return made

    monkeypatch.setattr(client, "create_run", create_then_stop)
    return client, port


async def _started_again(config: Config, pool: asyncpg.Pool, port: int) -> CairnServer:
    again = CairnServer(
        with_overrides(config, listen_address=f"127.0.0.1:{port}"),
        catalog.select(["tracking"]),
        pool,
    )
    await again.start()
    return again


async def test_a_step_of_none_is_step_0(tracking, experiment_id) -> None:
    """TrackingClient.log_metric takes step=None as 0, as MLflow does; the run's
    log_metric and log_metrics refused it ("step: None is no integer")."""
    async with tracking.start_run(experiment_id) as run:
        await run.log_metric("loss", 0.5, step=None)
        await run.log_metrics({"acc": 0.9}, step=None)
    for key in ("loss", "acc"):
        assert [m.step for m in await tracking.get_metric_history(run.run_id, key)] == [0]


# A script whose run's block is still open as the coroutine asyncio.run runs returns:
# entered and never left (`leave`), so with its client closed first (`close`), so
# while main waits for a line of its stdin (`wait`), or so once its run was deleted
# (`delete`); or a block in a task still running (`task`).
_LEFT_OPEN = """
import asyncio, contextlib, signal, sys
import cairn

port, experiment_id, journal_dir, how = sys.argv[1:]
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even if ignored here

def started(client):
    return client.start_run(
        experiment_id, send_interval=60, journal_dir=journal_dir, flush_timeout=10
    )

async def logged(run):
    for step in range(10):
        await run.log_metric("loss", 0.5, step)
    print(run.run_id, flush=True)

async def in_its_block(client, logging_done):
    async with started(client) as run:
        await logged(run)
        logging_done.set()
        await asyncio.Event().wait()

async def main():
    client = cairn.TrackingClient.insecure_connection("127.0.0.1", int(port))
    if how == "task":
        logging_done = asyncio.Event()
        running = asyncio.ensure_future(in_its_block(client, logging_done))
        await logging_done.wait()
        return
    async with client if how == "close" else contextlib.nullcontext():
        run = started(client)
        await run.__aenter__()
        await logged(run)
        if how == "wait":
            await asyncio.to_thread(sys.stdin.readline)
        if how == "delete":  # its points can no longer be stored
            await client.delete_run(run.run_id)
            with contextlib.suppress(cairn.CairnError):
                await run.flush()

asyncio.run(main())
"""


async def _left_open(
    port: int, experiment_id: str, journal_dir: Path, how: str
) -> asyncio.subprocess.Process:
    """_LEFT_OPEN run in a process of its own; it prints the run's id first."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _LEFT_OPEN,
        str(port),
        experiment_id,
        str(journal_dir),
        how,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _ended(script: asyncio.subprocess.Process) -> tuple[str, str]:
    """The run id a _LEFT_OPEN script printed, and its warnings (stderr), once it ended
    well."""
    out, err = await script.communicate()
    assert script.returncode == 0, err.decode()
    return out.decode().strip(), err.decode()


async def _kept_then_synced(tracking: cairn.TrackingClient, folder: Path, run_id: str) -> None:
    """The run's 10 points and its end, FINISHED, wait in its journal in folder, and a
    sync stores them and ends the run."""
    kept = Journal.read(folder / f"{run_id}.jsonl")
    assert kept.points == 10 and kept.status == RunStatus.FINISHED
    assert await tracking.sync_journal(folder) == 10
    assert (await tracking.get_run(run_id)).info.status == RunStatus.FINISHED


async def test_a_run_left_open_as_its_event_loop_closes_ends_with_its_points(
    tracking: cairn.TrackingClient, experiment_id: str, server_port: int, tmp_path: Path
) -> None:
    """asyncio.run cancelled the run's sender as it returned, and the points it held
    were dropped with the loop, with no word: the run stayed RUNNING, without them."""
    run_id, warnings = await _ended(await _left_open(server_port, experiment_id, tmp_path, "leave"))
    assert "its block was still open as its event loop closed; it ends FINISHED" in warnings
    assert (await tracking.get_run(run_id)).info.status == RunStatus.FINISHED
    assert len(await tracking.get_metric_history(run_id, "loss")) == 10
    assert list(tmp_path.iterdir()) == []


async def test_a_run_left_open_whose_client_closed_first_keeps_its_points(
    tracking: cairn.TrackingClient, experiment_id: str, server_port: int, tmp_path: Path
) -> None:
    run_id, warnings = await _ended(await _left_open(server_port, experiment_id, tmp_path, "close"))
    assert "10 points could not be sent as its client was closed" in warnings
    assert "Traceback" not in warnings  # no error of the loop's shutdown
    await _kept_then_synced(tracking, tmp_path, run_id)


async def test_a_block_cancelled_as_its_event_loop_closes_ends_with_its_points(
    tracking: cairn.TrackingClient, experiment_id: str, server_port: int, tmp_path: Path
) -> None:
    """asyncio.run cancelled the task in the block and the run's sender together: the
    block's end waited flush_timeout for a sender that was gone, then kept every point
    in the journal, though the server was there."""
    run_id, warnings = await _ended(await _left_open(server_port, experiment_id, tmp_path, "task"))
    assert "could not be sent" not in warnings
    assert (await tracking.get_run(run_id)).info.status == RunStatus.KILLED
    assert len(await tracking.get_metric_history(run_id, "loss")) == 10
    assert list(tmp_path.iterdir()) == []


async def test_a_run_left_open_whose_end_is_interrupted_keeps_its_points(
    tracking: cairn.TrackingClient, experiment_id: str, server_port: int, tmp_path: Path
) -> None:
    """Ctrl-C while a run left open flushed, as its loop closed, through an outage: the
    process ended before the end could keep anything, and every point was lost."""
    proxy = StallingProxy("127.0.0.1", server_port)
    script = await _left_open(await proxy.start(), experiment_id, tmp_path, "wait")
    try:
        assert script.stdout is not None and script.stderr is not None
        run_id = (await script.stdout.readline()).decode().strip()
        proxy.stall()  # the flush as the loop closes hangs
        await eventually(lambda: not proxy.forwarding, what="the connection cut")
        script.stdin.write(b"return\n")  # type: ignore[union-attr]
        async with asyncio.timeout(30):
            while b"its event loop closed" not in await script.stderr.readline():
                pass
        script.send_signal(signal.SIGINT)
        await script.wait()
    finally:
        await proxy.close()
    await _kept_then_synced(tracking, tmp_path, run_id)


async def test_a_run_left_open_whose_sends_failed_keeps_its_points_as_its_loop_closes(
    tracking: cairn.TrackingClient, experiment_id: str, server_port: int, tmp_path: Path
) -> None:
    """Its sender stopped at an error retrying cannot fix, so the loop's closing had no
    task to cancel: the points were dropped with no word, where a block's end keeps
    them in the journal with the error."""
    script = await _left_open(server_port, experiment_id, tmp_path, "delete")
    run_id, warnings = await _ended(script)
    assert "its block was still open as its event loop closed; it ends FAILED" in warnings
    assert "10 points could not be sent after an error retrying cannot fix" in warnings
    kept = Journal.read(tmp_path / f"{run_id}.jsonl")
    assert kept.points == 10 and kept.status == RunStatus.FAILED


async def test_a_run_begins_and_ends_by_one_clock(
    tracking: cairn.TrackingClient, experiment_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its end is this machine's time (chosen once, so a journal keeps it), its start
    was the server's: a machine whose clock is behind the server's made runs that
    ended before they began."""
    behind = 3_600_000  # this machine's clock, an hour behind the server's
    monkeypatch.setattr(active_run, "now_ms", lambda: time.time_ns() // 1_000_000 - behind)
    async with tracking.start_run(experiment_id) as run:
        await run.log_metric("loss", 0.5)
    info = (await tracking.get_run(run.run_id)).info
    assert info.end_time is not None and info.start_time <= info.end_time
