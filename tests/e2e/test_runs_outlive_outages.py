"""A run that `start_run` logs survives its server: killed with SIGKILL and started
again mid-run, or gone past the flush deadline (the journal, then `cairn sync`); and a
trainer killed during an outage leaves what it held in the journal."""

import asyncio
import math
import shutil
import sys
from pathlib import Path

import pgserver
import pytest
from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

import cairn
from cairn._clients.journal import Journal
from cairn.types import RunStatus
from tests.conftest import eventually
from tests.e2e.conftest import ServerProcess, run_tool, start_server, tool

pytestmark = pytest.mark.e2e
POINTS = 10_000
# A training process: logs 250 points (stored), waits for a line, logs 300 more, and
# waits to be killed.
TRAINER = """
import asyncio, sys
import cairn

async def main(address, experiment_id, journal_dir):
    host, port = address.split(":")
    async with cairn.TrackingClient.insecure_connection(host, int(port)) as tracking:
        async with tracking.start_run(
            experiment_id, batch_size=100, send_interval=0.5, journal_dir=journal_dir
        ) as run:
            for step in range(250):
                await run.log_metric("loss", step / 2, step=step)
            await run.flush()
            print(run.run_id, flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            for step in range(250, 550):
                await run.log_metric("loss", step / 2, step=step)
            print("logged", flush=True)
            await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:]))
"""


def _connect(server: ServerProcess) -> cairn.TrackingClient:
    host, port = server.address.split(":")
    return cairn.TrackingClient.insecure_connection(host, int(port))


def _stop_embedded_postgres(data_dir: Path) -> None:
    """The embedded PostgreSQL outlives a killed server, and pgserver then counts the
    dead process as a user still: stop it here."""
    postgres = pgserver.get_server(data_dir / "postgres", cleanup_mode=None)
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=postgres.pgdata, user=postgres.system_user)


async def _history(tracking: cairn.TrackingClient, run_id: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in await tracking.get_metric_history(run_id, "loss")]


async def test_a_run_outlives_a_server_killed_and_started_again(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        async with _connect(server) as tracking:
            experiment_id = await tracking.create_experiment("outlives-sigkill")
            async with tracking.start_run(
                experiment_id, batch_size=500, journal_dir=tmp_path / "journal"
            ) as run:
                for step in range(POINTS):
                    if step == 3_000:
                        server.process.kill()
                        server.process.wait(timeout=10)
                    if step == 6_000:
                        server = start_server(tmp_path, address=server.address)
                    await run.log_metric("loss", step / 2, step=step)
            assert run.journal is None
            assert list((tmp_path / "journal").glob("*")) == []  # nothing left behind
            history = await _history(tracking, run.run_id)
            assert history == [(step, step / 2) for step in range(POINTS)]  # each once
            assert (await tracking.get_run(run.run_id)).info.status == RunStatus.FINISHED
    finally:
        server.terminate(timeout=30)
        _stop_embedded_postgres(tmp_path)


async def test_what_cannot_be_sent_in_time_is_journaled_then_synced_once(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    journal_dir = tmp_path / "journal"
    try:
        async with _connect(server) as tracking:
            experiment_id = await tracking.create_experiment("outlives-deadline")
            async with tracking.start_run(
                experiment_id, batch_size=300, flush_timeout=1.0, journal_dir=journal_dir
            ) as run:
                for step in range(500):
                    await run.log_metric("loss", step, step=step)
                await run.flush()
                server.process.kill()
                server.process.wait(timeout=10)
                for step in range(500, 1_200):
                    await run.log_metric("loss", math.nan if step == 700 else step, step=step)
            assert run.journal is not None and run.journal.parent == journal_dir
            kept = Journal.read(run.journal)
            assert (kept.points, kept.status) == (700, RunStatus.FINISHED)
            shutil.copy(run.journal, tmp_path / "copy.jsonl")

        server = start_server(tmp_path, address=server.address)
        synced = run_tool(tool("cairn"), "sync", str(journal_dir), "--address", server.address)
        assert synced.returncode == 0, synced.stderr
        assert synced.stdout.strip() == "sent 700 points, each stored once"
        assert list(journal_dir.iterdir()) == []
        async with _connect(server) as tracking:
            # Replaying the same journal again stores nothing twice.
            assert await tracking.sync_journal(tmp_path / "copy.jsonl") == 700
            history = await _history(tracking, run.run_id)
            assert [step for step, _ in history] == list(range(1_200))
            assert math.isnan(dict(history)[700])
            assert (await tracking.get_run(run.run_id)).info.status == RunStatus.FINISHED
    finally:
        server.terminate(timeout=30)
        _stop_embedded_postgres(tmp_path)


async def test_a_trainer_killed_during_an_outage_leaves_its_points_in_the_journal(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path)
    journal_dir = tmp_path / "journal"
    async with _connect(server) as tracking:
        experiment_id = await tracking.create_experiment("killed-in-an-outage")
    trainer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        TRAINER,
        server.address,
        experiment_id,
        str(journal_dir),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert trainer.stdin is not None and trainer.stdout is not None
        run_id = (await trainer.stdout.readline()).decode().strip()
        server.process.kill()
        server.process.wait(timeout=10)
        trainer.stdin.write(b"on\n")
        await trainer.stdin.drain()
        assert await trainer.stdout.readline() == b"logged\n"
        journal = journal_dir / f"{run_id}.jsonl"

        def kept() -> bool:
            return journal.exists() and Journal.read(journal).points == 300

        await eventually(kept, timeout=30, what="the points logged in the outage journaled")
        trainer.kill()
        await trainer.wait()

        server = start_server(tmp_path, address=server.address)
        synced = run_tool(tool("cairn"), "sync", str(journal_dir), "--address", server.address)
        assert synced.returncode == 0, synced.stderr
        assert synced.stdout.strip() == "sent 300 points, each stored once"
        async with _connect(server) as tracking:
            history = await _history(tracking, run_id)
            assert history == [(step, step / 2) for step in range(550)]  # each once
            # Killed, the trainer never ended its run: it stays RUNNING, as in MLflow.
            assert (await tracking.get_run(run_id)).info.status == RunStatus.RUNNING
    finally:
        if trainer.returncode is None:
            trainer.kill()
            await trainer.wait()
        server.terminate(timeout=30)
        _stop_embedded_postgres(tmp_path)
