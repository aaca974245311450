"""The reaper of stalled connections to the byte endpoint: each is cut when due, whatever
its thread is doing, since a read timeout alone is no bound."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

REAP_SECONDS = 0.5  # how often connections past HEAD_SECONDS are looked for


class Reaper:
    """Shuts down connections still without their request head after HEAD_SECONDS
    (direct.py), and transfers that fall behind the pace (pace.py): a read timeout alone
    would let a client trickle a byte every few seconds for ever.

    It watches a duplicate of each connection's socket: TLS's wrap_socket detaches the
    handler's socket object, while shutting the duplicate down ends the TCP connection
    both name. Once stopped, it still cuts the connections it watches when they are due
    (a connection taken in before the endpoint closed sends its head, to be told
    SHUTTING_DOWN, or is cut), and ends when none is left."""

    def __init__(self) -> None:
        self._due: dict[socket.socket, float] = {}
        self._lock = threading.Lock()  # also keeps a duplicate from closing mid-shutdown
        self._stopping = False
        self._ended = False
        threading.Thread(target=self._run, name="cairn-direct-reaper", daemon=True).start()

    def watch(self, connection: socket.socket, due: float) -> socket.socket:
        """Watches the connection, to cut it at due (time.monotonic) unless told otherwise
        before; returns what to release once its head arrived."""
        watched = connection.dup()
        with self._lock:
            if self._ended:  # taken in before the endpoint closed, come too late
                _cut(watched)
            else:
                self._due[watched] = due
        return watched

    def hold_to(self, watched: socket.socket, due: float) -> None:
        """Cuts the connection at due (time.monotonic) unless told otherwise before."""
        with self._lock:
            if watched in self._due:
                self._due[watched] = due

    def release(self, watched: socket.socket) -> None:
        with self._lock:
            self._due.pop(watched, None)
            watched.close()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True

    def _run(self) -> None:
        while True:
            time.sleep(REAP_SECONDS)
            now = time.monotonic()
            with self._lock:
                for watched in [c for c, due in self._due.items() if due < now]:
                    del self._due[watched]
                    _cut(watched)
                if self._stopping and not self._due:
                    self._ended = True
                    return


def _cut(watched: socket.socket) -> None:
    with contextlib.suppress(OSError):  # the handler's reads end at once
        watched.shutdown(socket.SHUT_RDWR)
