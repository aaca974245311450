"""The signals that stop a server (SIGTERM, SIGINT, SIGHUP), and a startup step given up
at one."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Iterator
from typing import TypeVar

from . import logs
from .stopping import STOP_MARGIN_SECONDS

_log = logs.get("cairn.server")
_T = TypeVar("_T")


class Signalled(Exception):
    """A signal came before the server served: its startup was cancelled."""


async def before_signal(signals: SignalWaiter, step: Awaitable[_T]) -> _T:
    """The result of a step of the startup; or, if a signal comes first, Signalled.
    A step not done by then (a signal, or run() cancelled by its caller) is cancelled
    and given the stop's margin to end: one in a statement waits for PostgreSQL to
    confirm the cancel, which a partition never does."""
    stepping = asyncio.ensure_future(step)
    signalled = asyncio.ensure_future(signals.wait())
    try:
        await asyncio.wait({stepping, signalled}, return_when=asyncio.FIRST_COMPLETED)
        if stepping.done():
            if not signalled.cancel():  # it took a signal as the step ended: kept for later
                signals.keep(signalled.result())
            return stepping.result()
        _log.info("shutting down", signal=signalled.result(), serving=False)
        raise Signalled
    finally:
        signalled.cancel()
        if not stepping.done():
            stepping.cancel()
            await asyncio.wait({stepping}, timeout=STOP_MARGIN_SECONDS)
            # Left behind past the margin: how it ends is of no interest any more.
            stepping.add_done_callback(lambda left: left.cancelled() or left.exception())


# SIGHUP too: a terminal closed under `cairn serve` killed it at once, without the
# exit that stops an embedded PostgreSQL, which was left running. Unless it is ignored
# when the server starts: `nohup cairn serve` asks it to outlive its terminal.
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_UNLESS_IGNORED = (signal.SIGHUP,)


class SignalWaiter:
    """The stopping signals received: each wait() resolves with the name of the next one
    not waited for yet."""

    def __init__(self) -> None:
        self._received: asyncio.Queue[str] = asyncio.Queue()

    @classmethod
    @contextlib.contextmanager
    def installed(cls) -> Iterator[SignalWaiter]:
        """Handles the signals while the block runs (run() is called in-process by
        tests, whose loop goes on after it)."""
        waiter = cls()
        loop = asyncio.get_running_loop()
        handled = [
            sig
            for sig in _SIGNALS
            if not (sig in _UNLESS_IGNORED and signal.getsignal(sig) == signal.SIG_IGN)
        ]
        for sig in handled:
            loop.add_signal_handler(sig, waiter._on_signal, sig.name)
        try:
            yield waiter
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)

    def _on_signal(self, name: str) -> None:
        self._received.put_nowait(name)

    def keep(self, name: str) -> None:
        """Puts back a signal taken by a wait() that ended up not wanting it."""
        self._received.put_nowait(name)

    async def wait(self) -> str:
        return await self._received.get()
