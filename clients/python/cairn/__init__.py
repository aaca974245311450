"""Cairn: experiment tracking, a model registry and an artifact store over gRPC.

Connect to every service at once, or with one of the service clients::

    async with cairn.Client("http://127.0.0.1:50051") as client:
        await client.tracking.create_experiment("churn")

    async with cairn.TrackingClient.insecure_connection("127.0.0.1", 50051) as client:
        ...
"""

import os

# Before gRPC is imported, which reads it: its fork handlers, run in every child forked
# while calls are under way (a DataLoader's workers, multiprocessing's fork), killed
# some of them (SIGSEGV) before a line of their own ran. Cairn needs none of them: a
# child does not use its parent's clients (ForkedProcessError says so). Set it to
# "true" before importing cairn to keep gRPC's choice.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import importlib.util
import pkgutil
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers see; a program loads each name on its first use
    from . import exceptions, models, profiles, utils
    from ._client import Client, create_client_from_profile, create_client_from_token
    from ._clients.artifacts import ArtifactClient
    from ._clients.auth import AuthClient
    from ._clients.model_manager import ModelManager
    from ._clients.operations import OperationsClient
    from ._clients.registry import ModelRegistryAPIClient
    from ._clients.tracking import TrackingClient
    from ._clients.versioned_artifacts import ActiveArtifact
    from .exceptions import CairnError

# The module of each public name that is no module itself. Loaded on first use, not
# here: the `cairn` command imports this package before a line of its own runs, and
# loading the clients and gRPC takes a third of a second, in which a Ctrl-C printed a
# traceback (cairn.cli.console).
_HOMES = {
    "ActiveArtifact": "._clients.versioned_artifacts",
    "ArtifactClient": "._clients.artifacts",
    "AuthClient": "._clients.auth",
    "CairnError": ".exceptions",
    "Client": "._client",
    "ModelManager": "._clients.model_manager",
    "ModelRegistryAPIClient": "._clients.registry",
    "OperationsClient": "._clients.operations",
    "TrackingClient": "._clients.tracking",
    "create_client_from_profile": "._client",
    "create_client_from_token": "._client",
}

if not TYPE_CHECKING:  # to type checkers the imports above are the whole package

    def __getattr__(name: str) -> Any:
        """A public name, or a module of the package (`cairn.types`, `cairn.utils`, which
        the package loaded whole once), loaded on first use."""
        if name in _HOMES:
            found = getattr(importlib.import_module(_HOMES[name], __name__), name)
        elif name.isidentifier() and importlib.util.find_spec(f"{__name__}.{name}"):
            found = importlib.import_module(f"{__name__}.{name}")
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        globals()[name] = found  # later uses find it without this function
        return found

    def __dir__() -> list[str]:
        """The public names and modules (what `cairn.<Tab>` offers) and the module's own
        dunder names, not the modules this file imports for itself (os, importlib), nor
        the `cairn` command's package, which needs the command's dependencies."""
        modules = {found.name for found in pkgutil.iter_modules(__path__)} - {"cli"}
        own = (name for name in globals() if name.startswith("__") and name.endswith("__"))
        return sorted({*__all__, *own, *(name for name in modules if not name.startswith("_"))})


__all__ = [
    "ActiveArtifact",
    "ArtifactClient",
    "AuthClient",
    "CairnError",
    "Client",
    "ModelManager",
    "ModelRegistryAPIClient",
    "OperationsClient",
    "TrackingClient",
    "create_client_from_profile",
    "create_client_from_token",
    "exceptions",
    "models",
    "profiles",
    "utils",
]
