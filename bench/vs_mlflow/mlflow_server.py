"""`mlflow server` from .venv-mlflow as a subprocess, in one of two configurations."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from ..harness import _free_port

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
PYTHON = ROOT / ".venv-mlflow" / "bin" / "python"
WORKERS = 2


@contextlib.contextmanager
def mlflow_server(database_url: str, artifacts: Path, *, nodelay: bool) -> Iterator[str]:
    """The server's URL. With nodelay, nodelay/sitecustomize.py gives the connections the
    workers accept TCP_NODELAY, as a single uvicorn worker has it."""
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("PYTHONPATH", None)
    if nodelay:
        env["PYTHONPATH"] = str(HERE / "nodelay")
    command = [
        str(PYTHON.parent / "mlflow"),
        "server",
        "--backend-store-uri",
        database_url,
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(WORKERS),
    ]
    log = (artifacts.parent / f"mlflow-server-{port}.log").open("wb")
    process = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, Path(log.name))
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
        log.close()


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    health = f"{url}/health"
    deadline = time.monotonic() + 180  # migrating a fresh database takes a while
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited during startup:\n{_tail(log)}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(health, timeout=5) as reply,
        ):
            if reply.status == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"mlflow server did not start:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-30:])
