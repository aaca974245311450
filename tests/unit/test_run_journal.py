"""The journal a run leaves when its points cannot be sent in time: the batch in flight
keeps its request id and exactly its points; the rest get fresh ids. And the journal a
run keeps while its sends fail: left alone by syncs, gone once what it holds is stored,
never written over the run's last."""

import asyncio
import contextlib
import os
import sys
import textwrap
import threading
import tracemalloc
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from cairn._clients import journal as journals
from cairn._clients import journal_lines
from cairn._clients.active_run import ActiveRun
from cairn._clients.journal import UNFINISHED, UNFINISHED_SECONDS, Journal, LiveJournal
from cairn._clients.run_batches import Batches
from cairn._clients.run_logging import _columns
from cairn.exceptions import InvalidArgumentError, UnavailableError
from cairn.tracking.v1 import tracking_service_pb2 as api
from cairn.types import Metric, RunStatus
from tests.conftest import disk_full_after, eventually

RUN_ID = "3bffe191" * 4  # the shape of a run id: a first line of another names no run


class _Client:
    project = "vision"


def _run(tmp_path: Path) -> ActiveRun:
    run = ActiveRun(
        _Client(),  # type: ignore[arg-type]
        "1",
        run_name=None,
        tags=None,
        batch_size=4,
        max_buffered=100,
        flush_timeout=0.0,
        journal_dir=tmp_path,
    )
    run.run = type("R", (), {"info": type("I", (), {"run_id": RUN_ID})()})()
    return run


def test_the_batch_in_flight_keeps_its_id_and_only_its_points(tmp_path: Path) -> None:
    run = _run(tmp_path)
    for i in range(2):
        run._batches.add(Metric("loss", float(i), 1000 + i, i))
    batch = run._batches.next()  # a short batch is being sent; more points come
    assert batch is not None
    in_flight, _ = batch
    for i in range(2, 11):
        run._batches.add(Metric("loss", float(i), 1000 + i, i))
    run._keep_in_journal(RunStatus.FINISHED, None)
    assert run.journal is not None
    journal = Journal.read(run.journal)
    assert [(request_id == in_flight, len(points)) for request_id, points in journal.batches] == [
        (True, 2),
        (False, 4),
        (False, 4),
        (False, 1),
    ]
    assert [m.step for _, points in journal.batches for m in points] == list(range(11))
    assert journal.status == RunStatus.FINISHED and journal.end_time
    assert len({request_id for request_id, _ in journal.batches}) == 4


def test_without_a_batch_in_flight_every_batch_is_new(tmp_path: Path) -> None:
    run = _run(tmp_path)
    for i in range(5):
        run._batches.add(Metric("loss", float("nan"), 1, i))
    run._keep_in_journal(RunStatus.FAILED, None)
    assert run.journal is not None
    journal = Journal.read(run.journal)
    assert [len(points) for _, points in journal.batches] == [4, 1]
    assert journal.status == RunStatus.FAILED


def test_batches_keep_their_ids_once_journaled() -> None:
    """A journal written during an outage names each batch by the id it is then sent
    with, so a replay of that journal and the sends that follow store it once."""
    batches = Batches(batch_size=3)
    assert [batches.add(Metric("m", 0.0, 1, step)) for step in range(4)] == [
        False,
        False,
        True,
        True,
    ]
    journaled = batches.all()
    assert [len(points) for _, points in journaled] == [3, 1]
    batches.add(Metric("m", 0.0, 1, 4))
    sent = []
    while (batch := batches.next()) is not None:
        sent.append(batch)
        batches.stored()
    assert sent[:2] == journaled  # the same ids, the same points
    assert [m.step for m in sent[2][1]] == [4] and batches.points == 0


@pytest.mark.parametrize(
    "point",
    [
        lambda i: Metric("loss", -1.5, -(2**63), -(2**63) + i),  # the longest varints
        lambda i: Metric("\U0001f525" * 250 + str(i), 0.5, 1, i),  # a new long key each
    ],
    ids=["long numbers", "long keys"],
)
def test_no_batch_is_larger_than_the_least_message_a_server_takes(point: Any) -> None:
    """A batch of 100,000 points (as `batch_size` allows) took more than 1 MiB, the
    least CAIRN_MAX_MESSAGE_BYTES: a server given that refused it every time, and the
    run kept it in a journal no sync could store."""
    batches = Batches(batch_size=100_000)
    for i in range(100_000):
        batches.add(point(i))
    made = batches.all()
    assert sum(len(points) for _, points in made) == 100_000
    for request_id, points in made:
        request = api.LogBatchRequest(
            project="p" * 128, run_id=RUN_ID, request_id=request_id, metrics=_columns(points)
        )
        assert request.ByteSize() < 1024 * 1024
    assert len(made) > 1


class _Server:
    """A TrackingClient stand-in: refuses every send while down; holds a send of a point
    from step `held_from` on until `release` is set; keeps each batch by request id."""

    project = "vision"

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.held_from: int | None = None
        self.release = asyncio.Event()
        self.holding = asyncio.Event()  # a send is held
        self.batches: dict[str, list[Metric]] = {}
        self.ended: list[RunStatus] = []

    def for_project(self, project: str) -> "_Server":
        return self

    async def create_run(self, experiment_id: str, **ignored: Any) -> Any:
        return type("R", (), {"info": type("I", (), {"run_id": RUN_ID})()})()

    async def log_batch(
        self, run_id: str, metrics: Sequence[Metric] = (), *, request_id: str = "", **ignored: Any
    ) -> None:
        if self.down:
            raise UnavailableError("the server is away")
        if self.held_from is not None and any(m.step >= self.held_from for m in metrics):
            self.holding.set()
            await self.release.wait()
        self.batches.setdefault(request_id, list(metrics))

    async def set_terminated(self, run_id: str, status: RunStatus, *_: Any, **__: Any) -> None:
        if self.down:
            raise UnavailableError("the server is away")
        self.ended.append(status)

    def steps(self) -> list[int]:
        return sorted(m.step for batch in self.batches.values() for m in batch)


def _started(server: _Server, tmp_path: Path, flush_timeout: float = 5.0) -> ActiveRun:
    return ActiveRun(
        server,  # type: ignore[arg-type]
        "1",
        run_name=None,
        tags=None,
        batch_size=2,
        max_buffered=100,
        flush_timeout=flush_timeout,
        journal_dir=tmp_path,
        send_interval=0.05,
    )


async def test_a_journal_kept_in_an_outage_goes_once_what_it_holds_is_stored(
    tmp_path: Path,
) -> None:
    """Not only once nothing waits: a trainer logging on would keep it for ever, and a
    later kill would leave points stored long ago to sync."""
    server = _Server(down=True)
    async with _started(server, tmp_path) as run:
        for step in range(3):
            await run.log_metric("loss", 0.5, step)
        await eventually(lambda: run.journal is not None, what="a journal kept in the outage")
        kept = run.journal
        assert kept is not None and Journal.read(kept).points == 3
        server.held_from, server.down = 3, False
        for step in range(3, 10):  # logged on; their sends hang at the server
            await run.log_metric("loss", 0.5, step)
        await eventually(lambda: not kept.exists(), what="the journal gone once stored")
        assert run.journal is None and run._batches.points
        server.release.set()
    assert server.steps() == list(range(10))


async def test_a_sync_leaves_the_journal_of_a_run_going_on(tmp_path: Path) -> None:
    """A sync of the folder while the run goes on stored the journal, then removed the
    run's newer one in its place; it now skips it, and takes the run's last journal."""
    server = _Server(down=True)
    syncing = _Server()
    async with _started(server, tmp_path, flush_timeout=0.2) as run:
        for step in range(3):
            await run.log_metric("loss", 0.5, step)
        await eventually(lambda: run.journal is not None, what="a journal kept in the outage")
        assert await journals.replay(syncing, tmp_path) == 0  # type: ignore[arg-type]
        assert run.journal is not None and run.journal.exists()
        await run.log_metric("loss", 0.5, 3)
    assert Journal.read(run.journal).status == RunStatus.FINISHED
    assert await journals.replay(syncing, tmp_path) == 4  # type: ignore[arg-type]
    assert syncing.steps() == [0, 1, 2, 3]


async def _left_open_in_an_outage(server: _Server, tmp_path: Path) -> tuple[ActiveRun, str]:
    """A run whose first batch's send failed and was journaled, then 6 more points, left
    open (its end begun, flushing for up to 30 s), its journal holding the end; and the
    id of the first batch."""
    run = _started(server, tmp_path, flush_timeout=30.0)
    await run.__aenter__()
    for step in range(2):
        await run.log_metric("loss", 0.5, step)
    await eventually(lambda: run.journal is not None, what="a journal kept in the outage")
    assert run.journal is not None
    [(first, _)] = Journal.read(run.journal).batches
    for step in range(2, 8):
        await run.log_metric("loss", 0.5, step)
    return run, first


def _journal_status(run: ActiveRun) -> RunStatus | None:
    return None if run.journal is None else Journal.read(run.journal).status


class _HeldWrites(LiveJournal):
    """A LiveJournal whose next outage write (one without the run's end), once armed,
    waits until `go` is set, as one a busy thread pool takes up late."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.armed = False
        self.waiting, self.go, self.done = threading.Event(), threading.Event(), threading.Event()

    def keep(self, journal: Journal) -> Path | None:
        if self.armed and journal.status is None:
            self.armed = False
            self.waiting.set()
            self.go.wait(30)
            try:
                return super().keep(journal)
            finally:
                self.done.set()
        return super().keep(journal)


async def test_a_left_open_runs_journal_keeps_its_end_and_points(tmp_path: Path) -> None:
    """Outage writes after the end's, of points taken before it (one under way as the
    run was left open, or at the next failed send), replaced it: a second Ctrl-C then
    left a journal that ended no run, or one that ended it without its last points."""
    server = _Server(down=True)
    run = _started(server, tmp_path, flush_timeout=30.0)
    run._journal = held = _HeldWrites(tmp_path)
    await run.__aenter__()
    for step in range(2):
        await run.log_metric("loss", 0.5, step)
    await eventually(lambda: run.journal is not None, what="a journal kept in the outage")
    held.armed = True
    await asyncio.to_thread(held.waiting.wait, 30)  # a write of 2 points under way
    for step in range(2, 8):
        await run.log_metric("loss", 0.5, step)
    ending = asyncio.create_task(run.end_left_open("the test ended it"))
    await eventually(lambda: _journal_status(run) is not None, what="the journal with the end")
    held.go.set()
    await asyncio.to_thread(held.done.wait, 30)
    path = tmp_path / f"{RUN_ID}.jsonl"
    kept = Journal.read(path)
    assert (kept.status, kept.points) == (RunStatus.FINISHED, 8)
    server.down = False
    await ending
    assert run.journal is None and server.steps() == list(range(8))


async def test_a_left_open_runs_journal_stays_until_its_end_is_stored(tmp_path: Path) -> None:
    """Its first batch stored, the journal of the outage's start was removed, though the
    run's journal held 3 batches more and the end: a second Ctrl-C lost them."""
    server = _Server(down=True)
    run, first = await _left_open_in_an_outage(server, tmp_path)
    ending = asyncio.create_task(run.end_left_open("the test ended it"))
    await eventually(lambda: _journal_status(run) is not None, what="the journal with the end")
    server.held_from, server.down = 2, False  # the first batch is stored, the rest wait
    await asyncio.wait_for(server.holding.wait(), 15)
    assert list(server.batches) == [first]
    path = tmp_path / f"{RUN_ID}.jsonl"
    assert path.exists(), "the journal went with its first batch stored"
    kept = Journal.read(path)
    assert (kept.status, kept.points) == (RunStatus.FINISHED, 8)
    server.release.set()
    await ending
    assert not path.exists() and server.steps() == list(range(8))


def test_a_journal_kept_with_an_end_stays_as_it_is_until_the_run_ends(tmp_path: Path) -> None:
    point = Metric("loss", 0.5, 1, 0)
    live = LiveJournal(tmp_path)
    kept = live.keep(
        Journal(RUN_ID, "vision", [("a", [point]), ("b", [point])], RunStatus.KILLED, 7)
    )
    assert kept is not None
    assert live.keep(Journal(RUN_ID, "vision", [("a", [point])])) is None  # written before it
    journal = Journal.read(kept)
    assert (journal.status, journal.end_time, journal.points) == (RunStatus.KILLED, 7, 2)
    live.forget()  # its batches are stored; its end is not
    assert kept.exists()
    live.end(None)
    assert not kept.exists()


def test_a_last_journal_that_cannot_be_written_leaves_the_one_before_unheld(
    tmp_path: Path,
) -> None:
    """A full disk as the run ended kept the outage's journal held (flock) for the life
    of the process, so every sync of this process skipped it."""
    points = [Metric("loss", 0.5, 1, step) for step in range(100)]
    live = LiveJournal(tmp_path)
    kept = live.keep(Journal(RUN_ID, "vision", [("a", points[:1])]))
    assert kept is not None and _open_here(kept)
    last = Journal(RUN_ID, "vision", [("a", points)], RunStatus.FINISHED, 1)
    with disk_full_after(1024), pytest.raises(OSError):
        live.end(last)
    assert not _open_here(kept)
    assert live.path == kept and Journal.read(kept).points == 1


def test_a_journal_kept_late_never_replaces_the_runs_last(tmp_path: Path) -> None:
    """A write begun during the outage and ending after the run's end (its thread goes
    on when the end is cancelled) would put a state without the status back."""
    point = Metric("loss", 0.5, 1, 0)
    live = LiveJournal(tmp_path)
    live.keep(Journal(RUN_ID, "vision", [("a", [point])]))
    last = Journal(RUN_ID, "vision", [("a", [point]), ("b", [point])], RunStatus.FINISHED, 1)
    assert live.end(last) == tmp_path / f"{RUN_ID}.jsonl"
    assert live.keep(Journal(RUN_ID, "vision", [("a", [point])])) is None
    live.forget()
    assert Journal.read(tmp_path / f"{RUN_ID}.jsonl") == last
    assert list(tmp_path.glob("*.partial")) == []


def test_where_there_is_no_flock_a_live_journal_holds_no_open_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows has no flock, and refuses to replace or remove a file a process holds
    open: the run's journal is closed after each write there, or the next write and its
    removal failed, and the sender with them."""
    monkeypatch.setattr(journals, "fcntl", None)
    point = Metric("loss", 0.5, 1, 0)
    live = LiveJournal(tmp_path)
    kept = live.keep(Journal(RUN_ID, "vision", [("a", [point])]))
    assert kept is not None and not _open_here(kept)
    live.keep(Journal(RUN_ID, "vision", [("a", [point]), ("b", [point])]))
    assert not _open_here(kept)
    live.forget()
    assert not kept.exists()


def _open_here(path: Path) -> bool:
    """Whether this process has path open (Linux: /proc/self/fd)."""
    opened = []
    for descriptor in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed since listed
            opened.append(os.readlink(f"/proc/self/fd/{descriptor}"))
    return str(path) in opened


# Writes a run's journal whole, then begins its next and stays in fsync, as on a
# stalled disk, until killed.
_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from cairn._clients.journal import Journal
    from cairn.types import Metric

    folder, run_id = Path(sys.argv[1]), sys.argv[2]
    point = Metric("loss", 0.5, 1, 0)
    Journal(run_id, "vision", [("a", [point])]).write(folder)

    def stalled(descriptor):
        print("writing", flush=True)
        signal.pause()

    os.fsync = stalled
    Journal(run_id, "vision", [("a", [point]), ("b", [point])]).write(folder)
    """
)


async def test_a_journal_write_its_process_left_unfinished_goes_with_the_next_sync(
    tmp_path: Path,
) -> None:
    """A process killed as it wrote its run's journal left the file of that write in the
    folder for ever: no sync read it, and nothing else removed it."""
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _WRITER, str(tmp_path), RUN_ID, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert writer.stdout is not None and await writer.stdout.readline() == b"writing\n"
        [unfinished] = tmp_path.glob(f"*{UNFINISHED}")
        _age(unfinished, UNFINISHED_SECONDS + 1)
        syncing = _Server()
        assert await journals.replay(syncing, tmp_path) == 1  # type: ignore[arg-type]
        assert unfinished.exists()  # its process writes it still
    finally:
        writer.kill()
        await writer.wait()
    assert await journals.replay(syncing, tmp_path) == 0  # type: ignore[arg-type]
    assert not unfinished.exists()
    assert syncing.steps() == [0]


async def test_a_journal_write_just_made_is_left_to_its_process(tmp_path: Path) -> None:
    """A write's file exists for an instant before its process holds it: a sync then
    sees it as a killed process's, but for its age."""
    just_made = tmp_path / f"{RUN_ID}.{uuid.uuid4().hex}{UNFINISHED}"
    just_made.write_text("")
    assert await journals.replay(_Server(), tmp_path) == 0  # type: ignore[arg-type]
    assert just_made.exists()


async def test_a_sync_of_any_folder_removes_no_other_programs_unfinished_file(
    tmp_path: Path,
) -> None:
    others = [tmp_path / "dataset.tar.partial", tmp_path / f"{uuid.uuid4().hex}.partial"]
    for other in others:
        other.write_text("")
        _age(other, UNFINISHED_SECONDS + 1)
    assert await journals.replay(_Server(), tmp_path) == 0  # type: ignore[arg-type]
    assert all(other.exists() for other in others)


def _age(file: Path, seconds: float) -> None:
    """Dates file's last write seconds back, as if it was left that long ago."""
    written = file.stat().st_mtime - seconds
    os.utime(file, (written, written))


async def test_a_file_that_is_no_journal_is_refused_at_its_first_line_not_read_whole(
    tmp_path: Path,
) -> None:
    """A dataset's JSON lines synced by mistake were read whole into memory before
    their first line was found to name no run: a sync of a large one ran out of memory."""
    dataset = tmp_path / "train.jsonl"
    with dataset.open("wb") as out:
        out.write(b'{"text": "a first example"}\n')
        out.truncate(1024**3)  # a gigabyte, sparse: none of it on disk
    replayed, peak = await _synced_traced(tmp_path)
    assert peak < 16 * 1024**2
    [(_, refused)] = replayed.failures
    assert refused.reason == "INVALID_JOURNAL" and "line 1: KeyError: 'run_id'" in str(refused)


async def test_a_file_whose_first_line_is_long_is_refused_before_it_is_parsed(
    tmp_path: Path,
) -> None:
    """A dataset whose first line is long (a matrix on one line) was parsed, up to
    74 MB of it, before it was found to name no run: some 15 times its bytes."""
    (tmp_path / "matrix.jsonl").write_text("[" + "0," * (30 * 1024**2) + "0]\n")
    replayed, peak = await _synced_traced(tmp_path)
    assert peak < 16 * 1024**2
    [(_, refused)] = replayed.failures
    assert "line 1 is longer than any journal writes" in str(refused)


async def _synced_traced(folder: Path) -> tuple[journals.Replayed, int]:
    """What a sync of folder did, and the most memory it held at once (traced)."""
    tracemalloc.start()
    try:
        replayed = await journals.replay_each(_Server(), folder)  # type: ignore[arg-type]
        return replayed, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def test_a_line_longer_than_any_journal_writes_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_lines, "MAX_LINE_BYTES", 1024)
    points = [Metric("loss", 0.5, 1, step) for step in range(100)]
    Journal(RUN_ID, "vision", [("a", points[:1]), ("b", points)]).write(tmp_path)
    with pytest.raises(InvalidArgumentError, match="line 3 is longer than any journal writes"):
        await journals.replay(_Server(), tmp_path)  # type: ignore[arg-type]


async def test_a_journal_cut_short_sends_its_whole_lines_and_is_kept(tmp_path: Path) -> None:
    point = Metric("loss", 0.5, 1, 0)
    kept = Journal(RUN_ID, "vision", [("a", [point]), ("b", [point])]).write(tmp_path)
    kept.write_bytes(kept.read_bytes()[:-10])  # a full disk cut its last line
    syncing = _Server()
    replayed = await journals.replay_each(syncing, tmp_path)  # type: ignore[arg-type]
    [(file, refused)] = replayed.failures
    assert file == kept and "line 3, column 45: not JSON" in str(refused)
    assert replayed.sent == 1 and list(syncing.batches) == ["a"]
    assert kept.exists()


def _batch(point: str) -> str:
    return f'{{"request_id": "b-1", "metrics": [{point}]}}'


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (
            '{"request_id": "", "metrics": [["loss", 0.5, 1, 0]]}',
            "ValueError: a batch's request_id",
        ),
        ('{"request_id": 7, "metrics": [["loss", 0.5, 1, 0]]}', "ValueError: a batch's request_id"),
        (
            '{"status": "RUNNING", "end_time": 5}',
            "ValueError: a run ends FINISHED, FAILED or KILLED",
        ),
        ('{"request_id": "b-1", "metrics": "abcd"}', "ValueError: a batch's metrics are a list"),
        (_batch('["loss", "abc", 1, 0]'), "a point's value: 'abc' is no number"),
        (_batch('["loss", null, 1, 0]'), "a point's value: None is no number"),
        (_batch('["loss", true, 1, 0]'), "a point's value: True is no number"),
        (_batch("[5, 0.5, 1, 0]"), "a point's key: 5 is no string"),
        (_batch('["", 0.5, 1, 0]'), "a point's key: must not be empty"),
        (_batch('["loss", 0.5, "t", 0]'), "a point's timestamp: 't' is no integer"),
        (_batch('["loss", 0.5, 1e30, 0]'), "a point's timestamp: 1e+30 is no integer"),
        (_batch(f'["loss", 0.5, {2**63}, 0]'), "a point's timestamp: 9223372036854775808 does"),
        (_batch('["loss", 0.5, 1, 2.5]'), "a point's step: 2.5 is no integer"),
        ('{"status": "KILLED", "end_time": "soon"}', "an end's end_time: 'soon' is no integer"),
        ('{"status": "KILLED", "end_time": 1.5}', "an end's end_time: 1.5 is no integer"),
        (
            '{"status": "KILLED", "end_time": -5}',
            "an end's end_time: must be 0 or more milliseconds, got -5",
        ),
    ],
    ids=[
        "empty request id",
        "request id not a string",
        "an end that is no end",
        "metrics not a list",
        "value a string",
        "value null",
        "value true",
        "key a number",
        "key empty",
        "timestamp a string",
        "timestamp a float",
        "timestamp past 64 bits",
        "step a float",
        "end time a string",
        "end time a float",
        "end time negative",
    ],
)
async def test_a_line_a_client_never_writes_is_refused(tmp_path: Path, line: str, why: str) -> None:
    """A batch under an empty request id was sent under a new one at every sync (the
    client makes one for a call without), so each sync stored its points again; an
    end of RUNNING was "stored", and the file removed, with the run left running. A
    point or an end of the wrong type (a value of "abc", an end time of "soon") was
    sent as it was: refused by the server, or the request's making, as INVALID_ARGUMENT
    naming neither the file nor the line."""
    kept = tmp_path / f"{RUN_ID}.jsonl"
    kept.write_text(f'{{"run_id": "{RUN_ID}", "project": "vision"}}\n{line}\n')
    syncing = _Server()
    replayed = await journals.replay_each(syncing, tmp_path)  # type: ignore[arg-type]
    [(file, refused)] = replayed.failures
    assert file == kept and refused.reason == "INVALID_JOURNAL"
    assert f"{kept} is no journal of a run: line 2: {why}" in str(refused)
    assert syncing.batches == {} and syncing.ended == [] and kept.exists()


@pytest.mark.parametrize(
    "first",
    [
        '{"run_id": 5, "project": null}',
        '{"run_id": "not-a-run", "project": "nowhere", "name": "my export"}',
        '{"run_id": null, "project": "vision"}',
        f'{{"run_id": "{RUN_ID}", "project": ["vision"]}}',
        f'{{"run_id": "{RUN_ID}", "project": ""}}',
    ],
    ids=["run id a number", "run id of no run", "run id null", "project a list", "no project"],
)
async def test_a_first_line_that_names_no_run_is_refused_and_kept(
    tmp_path: Path, first: str
) -> None:
    """A file of such a first line alone (someone's JSON lines) was taken for a journal
    holding nothing more to store, removed, and the sync said it succeeded. A journal of
    a first line alone, which names a run, still goes: nothing in it waits."""
    kept = tmp_path / "export.jsonl"
    kept.write_text(first + "\n")
    nothing_left = Journal(RUN_ID, "vision").write(tmp_path)
    syncing = _Server()
    replayed = await journals.replay_each(syncing, tmp_path)  # type: ignore[arg-type]
    [(file, refused)] = replayed.failures
    assert (file, refused.reason) == (kept, "INVALID_JOURNAL")
    assert f"{kept} is no journal of a run: line 1: ValueError: a journal's" in str(refused)
    assert kept.exists() and not nothing_left.exists()


async def test_a_refused_line_quotes_only_the_start_of_what_it_holds(tmp_path: Path) -> None:
    """A point's value of a few megabytes (a line may hold 74 MB) was quoted whole in the
    error, and so in the sync's one line of output and the log."""
    kept = tmp_path / f"{RUN_ID}.jsonl"
    huge = "v" * 5_000_000
    kept.write_text(
        f'{{"run_id": "{RUN_ID}", "project": "vision"}}\n'
        + _batch(f'["loss", "{huge}", 1, 0]')
        + "\n"
    )
    replayed = await journals.replay_each(_Server(), tmp_path)  # type: ignore[arg-type]
    [(_, refused)] = replayed.failures
    quoted = f"{kept} is no journal of a run: line 2: a point's value: 'vvv"
    assert refused.reason == "INVALID_JOURNAL" and quoted in str(refused)
    assert len(refused.message) < len(str(kept)) + 2 * journal_lines.MAX_SHOWN_CHARACTERS


async def test_a_path_that_is_a_pipe_is_refused_not_waited_on(tmp_path: Path) -> None:
    """`cairn sync fifo.jsonl` opened the pipe and waited for a writer, for ever (a sync
    of its folder passes it over)."""
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    # On a loop of its own: a sync blocked opening the pipe blocks its loop.
    replay = journals.replay_each(_Server(), fifo)  # type: ignore[arg-type]
    syncing = asyncio.ensure_future(asyncio.to_thread(asyncio.run, replay))
    try:
        replayed = await asyncio.wait_for(asyncio.shield(syncing), 15)
    finally:
        if not syncing.done():  # a writer's open lets the blocked one return
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            await syncing
    [(file, refused)] = replayed.failures
    assert (file, refused.reason) == (fifo, "JOURNAL_UNREADABLE")
    assert f"journal {fifo} could not be read: it is no regular file" in str(refused)
    assert fifo.exists()


class _Swapping(_Server):
    """Replaces the file `swapped` by a folder as the first batch is stored: a journal
    listed by a sync that then cannot be read (EISDIR, as EACCES or EIO would be)."""

    def __init__(self, swapped: Path) -> None:
        super().__init__()
        self._swapped = swapped

    async def log_batch(self, run_id: str, *args: Any, **kwargs: Any) -> None:
        if self._swapped.is_file():
            self._swapped.unlink()
            self._swapped.mkdir()
        await super().log_batch(run_id, *args, **kwargs)


async def test_a_journal_that_cannot_be_read_is_kept_and_the_others_are_stored(
    tmp_path: Path,
) -> None:
    """Its OSError escaped the sync as it was: the journals after it were never stored."""
    point = Metric("loss", 0.5, 1, 0)
    first, unread, last = (
        Journal(run_id * 32, "vision", [(run_id, [point])]).write(tmp_path) for run_id in "abc"
    )
    syncing = _Swapping(unread)
    replayed = await journals.replay_each(syncing, tmp_path)  # type: ignore[arg-type]
    [(file, refused)] = replayed.failures
    assert (file, refused.reason) == (unread, "JOURNAL_UNREADABLE")
    assert str(unread) in str(refused)
    assert (replayed.sent, sorted(syncing.batches)) == (2, ["a", "c"])
    assert not first.exists() and not last.exists()
