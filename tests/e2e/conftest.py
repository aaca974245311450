"""A `cairn serve` subprocess, configured as `make run` configures it but for the
address and the data directory, and helpers for the real command-line clients."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    address: str
    log_path: Path

    def log_lines(self) -> list[dict]:
        return [
            json.loads(line)
            for line in self.log_path.read_text().splitlines()
            if line.startswith("{")
        ]

    def terminate(self, timeout: float) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def free_port() -> int:
    """A port a server started next may listen on. Below the ephemeral range: a port
    the kernel handed out for a bind to port 0 is one it also gives to the outgoing
    connections of other processes (the other test worker's), and one took it before
    the server bound it (Address already in use)."""
    lowest_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = random.randrange(10_000, max(lowest_ephemeral, 10_001))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use: another
            return port


def tool(name: str) -> str:
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed; 'make test' installs it"
    return found


def start_server(
    data_dir: Path, *extra: str, env: dict[str, str] | None = None, address: str | None = None
) -> ServerProcess:
    """`cairn serve` with its data under data_dir (at address, or a free port), once it
    serves; env adds CAIRN_* settings."""
    server = spawn_server(data_dir, *extra, env=env, address=address)
    _wait_until_serving(server)
    return server


def spawn_server(
    data_dir: Path, *extra: str, env: dict[str, str] | None = None, address: str | None = None
) -> ServerProcess:
    """As start_server, but at once, before the server serves (or fails to)."""
    address = address or f"127.0.0.1:{free_port()}"
    log_path = data_dir / "server.log"
    env = {
        **os.environ,
        **(env or {}),
        "CAIRN_DATA_DIR": str(data_dir),
        "CAIRN_LISTEN_ADDRESS": address,
    }
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [tool("cairn"), "serve", "--log-format", "json", *extra],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    return ServerProcess(process, address, log_path)


def _wait_until_serving(server: ServerProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"server exited early:\n{server.log_path.read_text()}")
        if any(line.get("event") == "serving" for line in server.log_lines()):
            return
        time.sleep(0.1)
    server.process.kill()
    raise AssertionError(f"server did not start:\n{server.log_path.read_text()}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("served"))
    yield server
    if server.process.poll() is None:
        server.terminate(timeout=30)


def bootstrap_admin_key(data_dir: Path, user: str = "ops", expires: str = "never") -> str:
    """The first key, made as docs/auth.md says: `cairn keys create --admin` straight
    against the database of data_dir, before any server requires keys."""
    created = subprocess.run(
        [tool("cairn"), "keys", "create", "--admin", "--user", user, "--expires", expires],
        env={**os.environ, "CAIRN_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


@contextmanager
def served_with_keys(
    data_dir: Path, user: str = "ops", expires: str = "never", env: dict[str, str] | None = None
) -> Iterator[tuple[ServerProcess, str]]:
    """A server requiring API keys, and the admin key bootstrapped for it."""
    key = bootstrap_admin_key(data_dir, user, expires)
    server = start_server(data_dir, "--auth", "api_key", env=env)
    try:
        yield server, key
    finally:
        server.terminate(timeout=30)


def run_tool(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
