"""A run's journal where the file system fails it: a last journal that cannot be
written, journals a sync stores but cannot remove, and journal folders given as `~/x`
or relative to a working directory that changes."""

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

import cairn
from cairn._clients.active_run import ActiveRun
from cairn._clients.journal import Journal
from cairn.types import Metric, RunStatus
from cairn_server.common.config import Config
from tests.conftest import disk_full_after, eventually, serving

CAIRN = str(Path(sys.executable).parent / "cairn")


@contextlib.asynccontextmanager
async def _run_without_its_server(
    config: Config, pool: asyncpg.Pool, name: str, journal_dir: str | Path, **options: float
) -> AsyncIterator[ActiveRun]:
    """A run begun, whose server has stopped since: its sends are refused."""
    async with _outage(config, pool, name, journal_dir, **options) as (run, _):
        yield run


@contextlib.asynccontextmanager
async def _outage(
    config: Config, pool: asyncpg.Pool, name: str, journal_dir: str | Path, **options: float
) -> AsyncIterator[tuple[ActiveRun, str]]:
    """A run begun, whose server has stopped since, and the address a server back would
    listen at for the run to reach it."""
    async with serving(config, pool, ["tracking"]) as port:
        client = cairn.TrackingClient.insecure_connection("127.0.0.1", port)
        experiment_id = await client.create_experiment(name)
        run = client.start_run(experiment_id, journal_dir=journal_dir, **options)  # type: ignore[arg-type]
        await run.__aenter__()
    try:
        yield run, f"127.0.0.1:{port}"
    finally:
        await client.close()


async def _journaled_in_the_outage(run: ActiveRun, points: int) -> Path:
    """Logs points to a run whose server is away; its outage's journal, once it holds
    them all."""
    for step in range(points):
        await run.log_metric("m", float(step), step=step)
    await eventually(
        lambda: run.journal is not None and Journal.read(run.journal).points == points,
        what="the outage's journal of every point",
    )
    assert run.journal is not None
    return run.journal


async def _synced(config: Config, pool: asyncpg.Pool, path: str | Path) -> int:
    """The points a sync of path sends once a server is back."""
    async with (
        serving(config, pool, ["tracking"]) as port,
        cairn.TrackingClient.insecure_connection("127.0.0.1", port) as back,
    ):
        return await back.sync_journal(path)


@contextlib.contextmanager
def _unremovable(folder: Path) -> Iterator[None]:
    """No file in folder can be removed (nor made): a read-only folder for a user, an
    immutable one (chattr +i) for root, whom a folder's mode does not stop."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    subprocess.run(["chattr", "+i", str(folder)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


async def _cairn(*argv: str, home: Path) -> tuple[int, str, str]:
    """The exit status, stdout and stderr of the `cairn` command, run with HOME at home
    (so no profile of the machine's user is read)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    process = await asyncio.create_subprocess_exec(
        CAIRN,
        *argv,
        env={**env, "HOME": str(home)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_last_journal_that_cannot_be_written_leaves_the_one_before_to_sync(
    config: Config,
    pool: asyncpg.Pool,
    unique: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A full disk as the run ended raised a bare OSError, told nothing, and kept the
    outage's journal held (flock) for the life of the process: a sync skipped it."""
    caplog.set_level(logging.WARNING, logger="cairn")
    async with _run_without_its_server(
        config, pool, f"full-{unique}", tmp_path, flush_timeout=0.5, send_interval=0.2
    ) as run:
        kept = await _journaled_in_the_outage(run, 100)
        with disk_full_after(2048), pytest.raises(OSError):
            await run.__aexit__(None, None, None)
    [told] = [w for w in _warnings(caplog) if "could not be kept" in w]
    assert told.startswith(f"run {run.run_id}: 100 points and its end (FINISHED) could not be")
    assert f"the journal kept before is left in {kept}" in told
    assert await _synced(config, pool, tmp_path) == 100


async def test_a_run_all_stored_whose_outage_journal_cannot_be_removed_ends_well(
    config: Config,
    pool: asyncpg.Pool,
    unique: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its server back, every point was stored and the run FINISHED; then its end raised
    the journal's PermissionError into the block (a training script ending well failed,
    or its own error was replaced), where a sync that cannot remove a journal warns."""
    caplog.set_level(logging.WARNING, logger="cairn")
    async with _outage(
        config, pool, f"kept-{unique}", tmp_path, flush_timeout=60, send_interval=0.2
    ) as (run, address):
        kept = await _journaled_in_the_outage(run, 100)
        with _unremovable(tmp_path):
            async with serving(config, pool, ["tracking"], listen_address=address) as port:
                await run.__aexit__(None, None, None)
                async with cairn.TrackingClient.insecure_connection("127.0.0.1", port) as back:
                    ended = await back.get_run(run.run_id)
                    history = await back.get_metric_history(run.run_id, "m")
    assert ended.info.status == RunStatus.FINISHED
    assert [point.step for point in history] == list(range(100))
    told = [w for w in _warnings(caplog) if "not removed" in w]
    assert told, "the journal left in the folder is told"
    assert all(
        w.startswith(f"run {run.run_id}: all is stored, but its journal {kept} was not removed")
        for w in told
    ), told
    assert kept.exists()  # a sync finds its batches stored


async def test_journals_stored_but_not_removable_are_told_and_all_are_stored(
    tracking: cairn.TrackingClient,
    experiment_id: str,
    server_port: int,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first journal's removal failing raised a bare PermissionError from the sync,
    and the journals after it were never stored."""
    caplog.set_level(logging.WARNING, logger="cairn")
    folder = tmp_path / "journals"
    runs = sorted([(await tracking.create_run(experiment_id)).info.run_id for _ in range(2)])
    files = [
        Journal(
            run_id,
            tracking.project,
            [(uuid.uuid4().hex, [Metric("m", 1.0, 1000, 0)])],
            RunStatus.FINISHED,
            2000,
        ).write(folder)
        for run_id in runs
    ]
    with _unremovable(folder):
        assert await tracking.sync_journal(folder) == 2
        status, out, err = await _cairn(
            "sync", str(folder), "--address", f"127.0.0.1:{server_port}", home=tmp_path
        )
    assert [(await tracking.get_run(r)).info.status for r in runs] == [RunStatus.FINISHED] * 2
    assert all(file.exists() for file in files)
    told = _warnings(caplog)
    assert len(told) == 2, told
    for file, warning in zip(files, told, strict=True):
        assert warning.startswith(f"journal {file} stored, but not removed: ")
    # The command fails, in one line: each later sync would send them again.
    assert (status, out) == (1, "")
    [line] = err.strip().splitlines()
    assert line.startswith("Error: a journal stored could not be removed: ")
    assert line.endswith(
        f"; sent 2 points; stored but not removed, remove by hand: {files[0]} and 1 more"
    )
    assert line.count(str(files[0])) == 1


async def test_a_journal_dir_under_home_is_the_homes(
    config: Config,
    pool: asyncpg.Pool,
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ "~/journals" was a folder named "~" in the working directory, and a sync of
    "~/journals" found nothing there."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    async with _run_without_its_server(
        config, pool, f"home-{unique}", "~/journals", flush_timeout=0.3
    ) as run:
        await run.log_metric("m", 1.0)
        await run.__aexit__(None, None, None)
    assert run.journal == home / "journals" / f"{run.run_id}.jsonl"
    assert not (tmp_path / "~").exists()
    assert await _synced(config, pool, "~/journals") == 1


async def test_cairn_sync_of_a_quoted_tilde_is_of_the_home(
    tracking: cairn.TrackingClient, run_id: str, server_port: int, tmp_path: Path
) -> None:
    """A shell leaves "~/journals" quoted as it is (so do cron's and systemd's lines)."""
    home = tmp_path / "home"
    Journal(run_id, tracking.project, [("a" * 32, [Metric("m", 1.0, 1000, 0)])]).write(
        home / "journals"
    )
    status, out, err = await _cairn(
        "sync", "~/journals", "--address", f"127.0.0.1:{server_port}", home=home
    )
    assert (status, out) == (0, "sent 1 points, each stored once\n"), err
    assert not any((home / "journals").iterdir())


async def test_a_relative_journal_dir_is_where_the_run_started(
    config: Config,
    pool: asyncpg.Pool,
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A chdir during an outage left the outage's journal in the old folder and wrote
    the run's last in the new one: a sync of either stored part of the run."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    async with _run_without_its_server(
        config, pool, f"rel-{unique}", "journals", flush_timeout=0.3, batch_size=1
    ) as run:
        await run.log_metric("m", 1.0, step=0)
        await eventually(lambda: run.journal is not None, what="the outage's journal")
        monkeypatch.chdir(tmp_path / "b")
        await run.log_metric("m", 2.0, step=1)
        await run.__aexit__(None, None, None)
    assert run.journal == tmp_path / "a" / "journals" / f"{run.run_id}.jsonl"
    kept = Journal.read(run.journal)
    assert (kept.points, kept.status) == (2, RunStatus.FINISHED)
    assert not (tmp_path / "b" / "journals").exists()
