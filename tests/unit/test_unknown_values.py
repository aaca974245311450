"""Answers holding an enum value this client does not know, as a newer server's would:
UnknownError UNKNOWN_VALUE naming the field, never a bare KeyError, ValueError or
RuntimeError, and never a value taken for another."""

from collections.abc import Callable
from typing import Any

import pytest

from cairn.auth.v1 import auth_pb2
from cairn.exceptions import UnknownError
from cairn.operations.v1 import operations_pb2
from cairn.registry.v1 import registry_pb2
from cairn.tracking.v1 import tracking_pb2
from cairn.types import ArtifactState, ModelVersionStage, OperationState, RunStatus
from cairn.types._auth import member_from_proto, project_from_proto
from cairn.types._operations_from_proto import operation_from_proto
from cairn.types._registry import (
    artifact_from_proto,
    mlflow_model_version_from_proto,
    registered_model_from_proto,
)
from cairn.types._tracking import experiment_from_proto, run_info_from_proto, runs_from_columns

_NEWER = 77


def _columns(
    status: int, stage: int = tracking_pb2.LIFECYCLE_STAGE_ACTIVE
) -> tracking_pb2.RunColumns:
    page = tracking_pb2.RunColumns(
        run_ids=["r"],
        experiment_ids=["1"],
        run_names=["n"],
        user_ids=["u"],
        statuses=[status],  # type: ignore[list-item]
        start_times_ms=[1],
        end_times_ms=[0],
        artifact_uris=["a"],
        lifecycle_stages=[stage],  # type: ignore[list-item]
        parent_run_ids=[""],
    )
    for kind in ("metric", "param", "tag", "input"):
        getattr(page, f"{kind}_counts").append(0)
    return page


_ANSWERS: dict[str, tuple[Callable[[Any], Any], Callable[[int], Any], str]] = {
    "run": (
        run_info_from_proto,
        lambda n: tracking_pb2.RunInfo(status=n),  # type: ignore[arg-type]
        "run status",
    ),
    "columnar runs": (runs_from_columns, _columns, "run status"),
    "run stage": (
        run_info_from_proto,
        lambda n: tracking_pb2.RunInfo(status=1, lifecycle_stage=n),  # type: ignore[arg-type]
        "lifecycle stage",
    ),
    "columnar stage": (
        runs_from_columns,
        lambda n: _columns(1, stage=n),
        "lifecycle stage",
    ),
    "experiment": (
        experiment_from_proto,
        lambda n: tracking_pb2.Experiment(lifecycle_stage=n),  # type: ignore[arg-type]
        "lifecycle stage",
    ),
    "caller role": (
        project_from_proto,
        lambda n: auth_pb2.Project(caller_role=n),  # type: ignore[arg-type]
        "project role",
    ),
    "model": (
        registered_model_from_proto,
        lambda n: registry_pb2.RegisteredModel(state=n),  # type: ignore[arg-type]
        "registered model state",
    ),
    "version state": (
        mlflow_model_version_from_proto,
        lambda n: registry_pb2.ModelVersion(state=n),  # type: ignore[arg-type]
        "model version state",
    ),
    "version stage": (
        mlflow_model_version_from_proto,
        lambda n: registry_pb2.ModelVersion(state=registry_pb2.STATE_LIVE, stage=n),  # type: ignore[arg-type]
        "model version stage",
    ),
    "member": (
        member_from_proto,
        lambda n: auth_pb2.ProjectMember(role=n),  # type: ignore[arg-type]
        "project role",
    ),
    "operation": (
        operation_from_proto,
        lambda n: operations_pb2.Operation(state=n),  # type: ignore[arg-type]
        "operation state",
    ),
}


@pytest.mark.parametrize("answer", list(_ANSWERS))
def test_a_value_this_client_does_not_know_is_unknown_naming_its_field(answer: str) -> None:
    """Before: KeyError (run status, role), ValueError (states), RuntimeError from a
    StopIteration (stage); an operation's was read as PENDING, which a wait for its end
    asked about for ever, a lifecycle stage as active, and the caller's role as None
    (a global admin's)."""
    read, message, field = _ANSWERS[answer]
    with pytest.raises(UnknownError) as raised:
        read(message(_NEWER))
    assert raised.value.reason == "UNKNOWN_VALUE"
    assert f"answered {field} {_NEWER}, which this client does not know" in raised.value.message


def test_the_values_it_knows_still_read() -> None:
    finished = tracking_pb2.RunInfo(status=3)  # type: ignore[arg-type]
    assert run_info_from_proto(finished).status == RunStatus.FINISHED
    assert runs_from_columns(_columns(1))[0].info.status == RunStatus.RUNNING
    stage = registry_pb2.STAGE_PRODUCTION
    version = registry_pb2.ModelVersion(state=registry_pb2.STATE_LIVE, stage=stage)
    assert mlflow_model_version_from_proto(version).stage == ModelVersionStage.PRODUCTION
    assert operation_from_proto(operations_pb2.Operation()).state == OperationState.PENDING


def test_an_artifact_state_it_does_not_know_is_kubeflows_unknown() -> None:
    """Kubeflow's ArtifactState has UNKNOWN, which the unset state already read as; a
    newer state raised ValueError before."""
    for state in (0, _NEWER):
        artifact = registry_pb2.Artifact(state=state, model={})  # type: ignore[arg-type]
        assert artifact_from_proto(artifact).state == ArtifactState.UNKNOWN
    live = registry_pb2.Artifact(state=registry_pb2.ARTIFACT_STATE_LIVE, model={})
    assert artifact_from_proto(live).state == ArtifactState.LIVE


def test_an_unset_caller_role_is_a_global_admins() -> None:
    assert project_from_proto(auth_pb2.Project()).role is None
