"""Pins the public names of the client package: removing one is a breaking change."""

import subprocess
import sys

import pytest

import cairn
from cairn import exceptions


def test_top_level_names() -> None:
    assert set(cairn.__all__) == {
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
    }
    for name in cairn.__all__:
        assert getattr(cairn, name) is not None


def test_dir_lists_the_public_names_and_modules_and_nothing_the_package_uses_itself() -> None:
    """A notebook's `cairn.<Tab>` offered os, importlib, pkgutil and TYPE_CHECKING, the
    package's own imports, beside its names; and no module not loaded yet (cairn.types)."""
    listed = set(dir(cairn))
    assert listed >= {*cairn.__all__, "core", "sync", "types", "__name__", "__path__"}
    assert not listed & {"os", "importlib", "pkgutil", "TYPE_CHECKING", "Any", "cli"}
    assert not any(name.startswith("_") and not name.startswith("__") for name in listed)


def test_a_bare_import_reaches_the_kubeflow_utils() -> None:
    """As `model_registry.utils` is to Kubeflow's users: no second import needed. A fresh
    interpreter, since this one may have imported cairn.utils already."""
    script = "import cairn; print(cairn.utils.s3_uri_from('m/v1', 'b', region='r'))"
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("s3://b/m/v1")


# Each public name and module, reached first of all.
_FIRST_USES = [
    *(f"import cairn; cairn.{name}" for name in cairn.__all__),
    *(f"import {module}" for module in ("cairn.core", "cairn.sync", "cairn.types")),
    "import cairn; cairn.types.ViewType",  # a module, reached as the package's attribute
]


@pytest.mark.parametrize("first", _FIRST_USES)
def test_each_public_name_loads_first_in_a_fresh_interpreter(first: str) -> None:
    """The package loads its names on first use (so the `cairn` command answers a Ctrl-C
    at once): each must load first of all, whatever order its modules then import one
    another in. `cairn.Client` first met an import cycle through the types package."""
    loaded = subprocess.run([sys.executable, "-c", first], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr


def test_exception_names() -> None:
    expected = {
        "CairnError",
        "AbortedError",
        "AlreadyExistsError",
        "CancelledError",
        "ClientClosedError",
        "DataLossError",
        "DeadlineExceededError",
        "FailedPreconditionError",
        "ForkedProcessError",
        "InternalError",
        "InvalidArgumentError",
        "ModelAlreadyExists",
        "ModelNotFound",
        "NotFoundError",
        "OperationFailedError",
        "OperationTimeoutError",
        "OutOfRangeError",
        "PermissionDeniedError",
        "ResourceExhaustedError",
        "UnauthenticatedError",
        "UnavailableError",
        "UnimplementedError",
        "UnknownError",
        "error_class",
        "from_grpc_error",
    }
    assert set(exceptions.__all__) == expected
    for name in expected - {"error_class", "from_grpc_error"}:
        assert issubclass(getattr(exceptions, name), exceptions.CairnError)
    # Devo's names are aliases, not classes of their own.
    assert exceptions.ModelAlreadyExists is exceptions.AlreadyExistsError
    assert exceptions.ModelNotFound is exceptions.NotFoundError
    # A wait that timed out is a TimeoutError too, like a call past its deadline.
    assert issubclass(exceptions.OperationTimeoutError, TimeoutError)


def test_clients_share_the_connection_constructors() -> None:
    for client in (
        cairn.TrackingClient,
        cairn.ModelRegistryAPIClient,
        cairn.ArtifactClient,
        cairn.AuthClient,
        cairn.OperationsClient,
    ):
        assert callable(client.insecure_connection)
        assert callable(client.secure_connection)


def test_type_names() -> None:
    from cairn import types

    assert set(types.__all__) == {
        "ApiKey",
        "ApiKeyExpirationTime",
        "ArtifactState",
        "DocArtifact",
        "Experiment",
        "LifecycleStage",
        "ListOptions",
        "ManagedModel",
        "Metric",
        "MlflowModelVersion",
        "ModelArtifact",
        "ModelVersion",
        "ModelVersionLineage",
        "ModelVersionStage",
        "ModelVersionState",
        "ObjectInfo",
        "Operation",
        "OperationKind",
        "OperationState",
        "OrderByField",
        "PagedList",
        "Pager",
        "Param",
        "PresignedUrl",
        "Project",
        "ProjectMember",
        "ProjectRole",
        "RegisteredModel",
        "RegisteredModelState",
        "Run",
        "RunData",
        "RunInfo",
        "RunInput",
        "RunOperations",
        "RunStatus",
        "RunTag",
        "VersionedArtifact",
        "ViewType",
    }
    for name in types.__all__:
        assert not type(getattr(types, name)).__module__.startswith("google.protobuf")


def test_model_names() -> None:
    from cairn import models

    assert set(models.__all__) == {
        "CACHE_ENV",
        "MANIFEST",
        "ArtifactUri",
        "CloudpickleFlavor",
        "FileEntry",
        "FilesFlavor",
        "Flavor",
        "Manifest",
        "ModelCache",
        "ModelInfo",
        "ModelUri",
        "PickleFlavor",
        "RunUri",
        "SklearnFlavor",
        "UntrustedModelError",
        "Uri",
        "default_cache_dir",
        "get_flavor",
        "is_uri",
        "parse_uri",
        "register_flavor",
    }
    assert issubclass(models.UntrustedModelError, exceptions.FailedPreconditionError)
    for method in ("log_model", "load_model", "download_artifacts", "get_runs_using"):
        assert callable(getattr(cairn.TrackingClient, method))
    for method in (
        "create_artifact",
        "get_artifact",
        "get_artifact_versions",
        "get_model_version_lineage",
    ):
        assert callable(getattr(cairn.ModelRegistryAPIClient, method))
    for method in ("add_model", "get_model", "find_model", "get_models"):
        assert callable(getattr(cairn.ModelManager, method))


def test_client_and_server_agree_on_the_stream_verdict_header() -> None:
    from cairn import _transport
    from cairn_server.artifacts import upload_messages

    assert _transport.STREAM_VERDICT_HEADER == upload_messages.STREAM_VERDICT_HEADER


def test_sync_client_names() -> None:
    from cairn import sync

    assert set(sync.__all__) == {
        "ArtifactClient",
        "AuthClient",
        "Client",
        "ModelManager",
        "ModelRegistryAPIClient",
        "OperationsClient",
        "TrackingClient",
        "create_client_from_profile",
        "create_client_from_token",
    }
    assert callable(sync.ModelManager)  # wraps a sync registry client, as Devo's Client
    assert callable(sync.Client) and callable(sync.create_client_from_token)
    single = {"Client", "ModelManager", "create_client_from_profile", "create_client_from_token"}
    for name in set(sync.__all__) - single:
        client = getattr(sync, name)
        assert client._async_client is getattr(cairn, name)
        assert callable(client.insecure_connection)
        assert callable(client.secure_connection)
