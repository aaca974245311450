"""The journal a run leaves when its points cannot be sent in time: the batch in flight
keeps its request id and exactly its points; the rest get fresh ids."""

from pathlib import Path

from cairn._clients.active_run import ActiveRun
from cairn._clients.journal import Journal
from cairn._clients.run_batches import Batches
from cairn.types import Metric, RunStatus


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
    run.run = type("R", (), {"info": type("I", (), {"run_id": "r" * 32})()})()  # type: ignore[assignment]
    return run


def test_the_batch_in_flight_keeps_its_id_and_only_its_points(tmp_path: Path) -> None:
    run = _run(tmp_path)
    for i in range(2):
        run._batches.add(Metric("loss", float(i), 1000 + i, i))
    in_flight, _ = run._batches.next()  # a short batch is being sent; more points come
    for i in range(2, 11):
        run._batches.add(Metric("loss", float(i), 1000 + i, i))
    run._keep_in_journal(RunStatus.FINISHED)
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
    run._keep_in_journal(RunStatus.FAILED)
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
