"""The `cairn` command: experiments, runs, metrics, artifacts, models, projects and API
keys from the shell, and the server's own commands (serve, migrate, config).

`main` is the console script; the commands are in `_root`, loaded by it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Sequence


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: runs one command and exits with its status."""
    with _interrupts_end_quietly():
        from ._root import run
    run(argv)


@contextlib.contextmanager
def _interrupts_end_quietly() -> Iterator[None]:
    """A Ctrl-C while the command's modules load (about half a second) ends the process
    by the signal, as a shell's own commands end (status 130), where Python's handler
    printed a KeyboardInterrupt traceback from whichever import it stopped. Python's
    handler is back once they are loaded: the command's own handling builds on it. A
    process that ignores Ctrl-C (a background job's) or handles it otherwise keeps its
    choice."""
    ours = threading.current_thread() is threading.main_thread()
    if not ours or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
