"""Loaded by every Python process of the MLflow server when this directory is on
PYTHONPATH (`make bench-vs-mlflow`'s fair configuration).

asyncio sets TCP_NODELAY only on sockets whose protocol number is IPPROTO_TCP. uvicorn
with several workers binds its listening socket itself with socket.socket(family), whose
protocol number is 0, so the connections it accepts keep Nagle's algorithm: a response
written in two parts waits for the client's delayed ACK, about 40 ms a keep-alive call.
Setting the option on every TCP stream socket asyncio accepts is what one worker gets.
"""

import asyncio.base_events
import socket


def _set_nodelay(sock: socket.socket) -> None:
    if sock.family in {socket.AF_INET, socket.AF_INET6} and sock.type == socket.SOCK_STREAM:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


asyncio.base_events._set_nodelay = _set_nodelay  # type: ignore[attr-defined]
