"""The `cairn` command: experiments, runs, metrics, artifacts, models, projects and API
keys from the shell, and the server's own commands (serve, migrate, config).

`console` is the console script; `main` runs a command in a program of its own; the
commands are in `_root`, which either loads.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Sequence


def console() -> None:
    """The console script: `main`, with a Ctrl-C while the command loads (a third of a
    second) ending the process by the signal, as it ends a shell's own commands (status
    130), where Python's handler printed a KeyboardInterrupt traceback from whichever
    import it stopped. Only here: a program that calls `main` itself (a notebook's
    kernel) would die of it, and gets a KeyboardInterrupt instead."""
    with _interrupts_end_quietly():
        from . import _root  # noqa: F401 (loaded here, under the signal's own action)
    main()


def main(argv: Sequence[str] | None = None) -> None:
    """Runs one command (argv, else the process's arguments) and exits with its status."""
    from ._root import run

    run(argv)


@contextlib.contextmanager
def _interrupts_end_quietly() -> Iterator[None]:
    """SIGINT at its default action, then Python's handler back: the command's own
    handling of Ctrl-C builds on it. A process that ignores Ctrl-C (a background job's)
    or handles it otherwise keeps its choice."""
    ours = threading.current_thread() is threading.main_thread()
    if not ours or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
