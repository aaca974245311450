"""A scheduler stops a job with SIGTERM (Kubernetes, Slurm), which Python does not turn
into an exception: the process ends at once, as with SIGKILL. docs/tracking.md gives the
line that makes it end a run as Ctrl-C does; these run a script with and without it."""

import asyncio
import signal
import sys

import pytest

import cairn
from cairn.types import RunStatus

# A training script of the sync facade: 100 points logged, then it waits (for a line
# of stdin) inside its run's block, as a long step would, until the scheduler stops it.
_TRAINING = """
import signal, sys
from cairn import sync

port, experiment_id, as_ctrl_c = sys.argv[1], sys.argv[2], sys.argv[3] == "yes"
if as_ctrl_c:
    signal.signal(signal.SIGTERM, signal.default_int_handler)
with sync.TrackingClient.insecure_connection("127.0.0.1", int(port)) as tracking:
    with tracking.start_run(experiment_id, send_interval=60) as run:
        for step in range(100):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
        print(run.run_id, flush=True)
        sys.stdin.readline()
"""


@pytest.mark.parametrize(
    ("as_ctrl_c", "status", "points"),
    [(True, RunStatus.KILLED, 100), (False, RunStatus.RUNNING, 0)],
    ids=["default_int_handler", "python-default"],
)
async def test_sigterm_ends_a_run_as_ctrl_c_once_it_raises_keyboard_interrupt(
    tracking: cairn.TrackingClient,
    experiment_id: str,
    server_port: int,
    as_ctrl_c: bool,
    status: RunStatus,
    points: int,
) -> None:
    """With SIGTERM left to Python, the run stays RUNNING and the points of its last
    send_interval are lost; given signal.default_int_handler, SIGTERM ends it KILLED
    with every point stored, as Ctrl-C does."""
    script = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _TRAINING,
        str(server_port),
        experiment_id,
        "yes" if as_ctrl_c else "no",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert script.stdout is not None and script.stderr is not None
    try:
        async with asyncio.timeout(60):
            run_id = (await script.stdout.readline()).decode().strip()
            assert run_id, (await script.stderr.read()).decode()
            script.send_signal(signal.SIGTERM)
            await script.wait()
    finally:
        if script.returncode is None:
            script.kill()
            await script.wait()

    run = await tracking.get_run(run_id)
    assert run.info.status == status
    assert len(await tracking.get_metric_history(run_id, "loss")) == points
