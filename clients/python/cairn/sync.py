"""The sync facade: the same clients for scripts and notebooks, without `await`.

    from cairn import sync

    with sync.TrackingClient.insecure_connection("127.0.0.1", 50051) as tracking:
        experiment_id = tracking.create_experiment("churn")
        with tracking.start_run(experiment_id) as run:
            run.log_metric("loss", 0.42, step=1)

Each sync client runs its async twin on a private event loop in a daemon thread and
waits for every call there, so both behave alike: the same arguments, return values and
exceptions. Objects the async client hands out to be used further (`ActiveRun`,
`ActiveArtifact`) come back with their methods made sync. A method that streams
(`iter_metric_history`, `ArtifactClient.open`) returns a plain iterator; an object used
with `async with` (`start_run`) is used with `with`;
`Pager` iterates with `for`. Calls from several threads are safe: they queue on the loop.
A plain progress callback (`wait_operation`'s `on_progress`) runs on a thread of its own, off
the loop: it may call the same client, and a slow one holds up no other thread's call.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, ClassVar, Self

from . import _client
from ._base import BaseClient
from ._clients.artifacts import ArtifactClient as _AsyncArtifactClient
from ._clients.auth import AuthClient as _AsyncAuthClient
from ._clients.model_manager import ModelManager as _AsyncModelManager
from ._clients.operations import OperationsClient as _AsyncOperationsClient
from ._clients.registry import ModelRegistryAPIClient as _AsyncRegistryClient
from ._clients.tracking import TrackingClient as _AsyncTrackingClient
from ._sync.runner import Runner, from_its_loop
from ._sync.views import SyncView
from .exceptions import ClientClosedError

__all__ = [
    "ArtifactClient",
    "AuthClient",
    "Client",
    "ModelManager",
    "ModelRegistryAPIClient",
    "OperationsClient",
    "TrackingClient",
    "create_client_from_profile",
    "create_client_from_token",
]


class _Closing(SyncView):
    """A sync client's closing, with `with` or `close()`; closing twice is harmless."""

    def __init__(self, target: Any, runner: Runner) -> None:
        super().__init__(target, runner)
        runner.queued.transport = target._transport
        # Threads closing at once (an atexit hook, a block's end) return once the first
        # has closed the client: a second began as the first stopped the loop, raised
        # ClientClosedError, and returned before the end.
        # Reentrant: a signal handler closing it may interrupt its thread's close.
        self._closing = threading.RLock()
        self._closer: int | None = None  # the thread closing it

    def close(self) -> None:
        """Closes the channel, then stops the client's loop.

        Raises:
            RuntimeError: called on the client's loop (from a progress callable), which
                the close would wait on for ever, as any call from there.
        """
        if self._runner.forked:  # a copy of the lock a thread held at the fork stays held
            return
        if self._runner.on_its_loop:
            raise from_its_loop()
        with self._closing:
            if self._runner.closed or self._closer == threading.get_ident():
                return  # closed, or closing: a signal handler amid this thread's close
            self._closer = threading.get_ident()
            try:
                self._runner.wait(self._target.close())
            except ClientClosedError:
                # Closed by a signal handler that ran on this thread before it was
                # noted as the closer: that close did it all.
                if not self._runner.closed:
                    raise
            finally:
                self._runner.close()
                self._closer = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SyncClient(_Closing):
    """A sync client: its async twin, on a loop of its own."""

    _async_client: ClassVar[type[BaseClient]]

    @classmethod
    def insecure_connection(cls, *args: Any, **kwargs: Any) -> Self:
        """As the async client's `insecure_connection` (same arguments)."""
        return cls._connect(cls._async_client.insecure_connection, args, kwargs)

    @classmethod
    def secure_connection(cls, *args: Any, **kwargs: Any) -> Self:
        """As the async client's `secure_connection` (same arguments)."""
        return cls._connect(cls._async_client.secure_connection, args, kwargs)

    @classmethod
    def _connect(
        cls, connect: Callable[..., BaseClient], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Self:
        runner = Runner()
        # The channel is made on the loop that will use it.
        client = runner.wait(_made_on_loop(connect, args, kwargs))
        return cls(client, runner)


async def _made_on_loop(
    connect: Callable[..., BaseClient], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> BaseClient:
    return connect(*args, **kwargs)


class TrackingClient(_SyncClient):
    """`cairn.TrackingClient`, without `await`."""

    _async_client = _AsyncTrackingClient


class ModelRegistryAPIClient(_SyncClient):
    """`cairn.ModelRegistryAPIClient`, without `await`."""

    _async_client = _AsyncRegistryClient


class ArtifactClient(_SyncClient):
    """`cairn.ArtifactClient`, without `await`."""

    _async_client = _AsyncArtifactClient


class AuthClient(_SyncClient):
    """`cairn.AuthClient`, without `await`."""

    _async_client = _AsyncAuthClient


class OperationsClient(_SyncClient):
    """`cairn.OperationsClient`, without `await`."""

    _async_client = _AsyncOperationsClient


def ModelManager(
    registry: ModelRegistryAPIClient,
    download_path: str | os.PathLike[str] = ".",
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """`cairn.ModelManager` (Devo's calls) over a sync registry client, without `await`."""
    manager = _AsyncModelManager(registry._target, download_path, cache_dir=cache_dir)
    return SyncView(manager, registry._runner)


class Client(_Closing):
    """`cairn.Client` without `await`: `.tracking`, `.registry`, `.artifacts`, `.auth`,
    `.operations` and `.models` are sync too, over the one channel, and so are Devo's `add_model`,
    `get_model`, `find_model` and `get_models` on the client itself."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """As `cairn.Client(...)` (same arguments)."""
        self._adopt(_client.Client(*args, **kwargs))

    @classmethod
    def _of(cls, client: _client.Client) -> Client:
        wrapped = cls.__new__(cls)
        wrapped._adopt(client)
        return wrapped

    def _adopt(self, client: _client.Client) -> None:
        # The async client opens its channel on its first call, so on this loop.
        runner = Runner()
        super().__init__(client, runner)
        for name in ("tracking", "registry", "artifacts", "auth", "operations", "models"):
            object.__setattr__(self, name, SyncView(getattr(client, name), runner))


def create_client_from_token(*args: Any, **kwargs: Any) -> Client:
    """As `cairn.create_client_from_token` (Devo's factory), the client sync."""
    return Client._of(_client.create_client_from_token(*args, **kwargs))


def create_client_from_profile(*args: Any, **kwargs: Any) -> Client:
    """As `cairn.create_client_from_profile` (Devo's factory), the client sync."""
    return Client._of(_client.create_client_from_profile(*args, **kwargs))
