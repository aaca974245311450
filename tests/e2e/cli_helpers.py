"""Running the real `cairn` executable as a user would, with a clean environment."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import termios
import time
from pathlib import Path
from typing import Any

from tests.e2e.conftest import tool

PIPE_BYTES = 65536  # what a pipe holds on Linux, unless resized


def waiting_in_pipe(fd: int) -> int:
    """The bytes written into the pipe whose read end is fd, not read yet."""
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])


def blocked_writing_to_a_pipe(pid: int) -> bool:
    """Whether the main thread of process pid waits for room in a pipe it writes to
    (however full the pipe looks: small writes fill its pages only in part)."""
    return Path(f"/proc/{pid}/wchan").read_text().endswith("pipe_write")


def environment(home: Path, **variables: str) -> dict[str, str]:
    """os.environ without any CAIRN_* setting, HOME at home (so no profile file of the
    machine's user is read), plus variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    return {**env, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), **variables}


def run_cairn(
    *argv: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("cairn"), *argv], env=env, capture_output=True, text=True, timeout=timeout
    )


def ok(*argv: str, env: dict[str, str]) -> str:
    """stdout of a command that must succeed."""
    done = run_cairn(*argv, env=env)
    assert done.returncode == 0, f"cairn {' '.join(argv)}: {done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout


def as_json(*argv: str, env: dict[str, str]) -> Any:
    return json.loads(ok(*argv, "--output", "json", env=env))


def failed(*argv: str, env: dict[str, str]) -> str:
    """The one-line stderr of a command that must fail with status 1."""
    done = run_cairn(*argv, env=env)
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def on_a_terminal(*argv: str, env: dict[str, str], columns: int = 120) -> str:
    """What a command that must succeed shows with stdout on a terminal (a pseudo-
    terminal of the given width), as its user sees it: escape codes included."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    with subprocess.Popen(
        [tool("cairn"), *argv], env=env, stdout=follower, stderr=subprocess.PIPE
    ) as command:
        os.close(follower)
        try:
            shown = read_to_the_end(leader)
        except BaseException:
            command.kill()
            raise
        finally:
            os.close(leader)
        stderr = command.stderr.read() if command.stderr else b""
    assert command.returncode == 0, f"cairn {' '.join(argv)}: {stderr.decode()}"
    return shown.decode()


def read_to_the_end(leader: int, timeout: float = 60) -> bytes:
    """What a pseudo-terminal shows until the last process writing to it ends (within
    timeout seconds)."""
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([leader], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"still writing after {timeout:g} s: {b''.join(chunks)[-2000:]!r}"
        try:
            chunk = os.read(leader, 65536)
        except OSError as error:  # EIO: the last writer closed its end
            if error.errno != errno.EIO:
                raise
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
