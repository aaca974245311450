"""What every benchmark needs: a throwaway PostgreSQL, a server subprocess, timing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pgserver

BIN = Path(sys.executable).parent


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="cairn-bench-pg-") as data:
        server = pgserver.get_server(data, cleanup_mode="delete")
        yield server.get_uri()


@contextlib.contextmanager
def serve(database_url: str, *services: str, **settings: str) -> Iterator[Server]:
    """`cairn serve` in its own process, as in production; settings are CAIRN_* values
    by their lowercase names (auth="api_key")."""
    port = _free_port()
    env = {**os.environ, "CAIRN_LOG_LEVEL": "warning"}
    env.update({f"CAIRN_{name.upper()}": value for name, value in settings.items()})
    process = subprocess.Popen(
        [
            str(BIN / "cairn"),
            "serve",
            *services,
            "--database-url",
            database_url,
            "--listen-address",
            f"127.0.0.1:{port}",
            "--db-pool-size",
            "16",
        ],
        env=env,
    )
    try:
        _wait_for_port(port, process)
        yield Server(process, port)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


class RssSampler:
    """Samples a process's resident memory every few milliseconds while active."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.baseline = server.rss_kib()
        self.peak = self.baseline
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RssSampler:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.peak = max(self.peak, self.server.rss_kib())

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.baseline) / 1024

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.server.rss_kib())
            await asyncio.sleep(0.005)


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def median(samples: list[float]) -> float:
    return statistics.median(samples)


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def report(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>14}  {note}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("server exited during startup")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("server did not start")
