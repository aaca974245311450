"""What a registry write writes to, whose writes take turns (registry/written.py)."""

from cairn.registry.v1 import registry_pb2 as pb
from cairn.registry.v1 import registry_service_pb2 as api
from cairn_server.registry.written import written_to


def test_a_model_is_named_by_its_id_else_by_its_name_within_its_project() -> None:
    by_id = written_to(api.SetRegisteredModelTagRequest(registered_model_id="7", key="k"))
    created = api.CreateModelVersionRequest(model_version=pb.ModelVersion(registered_model_id="7"))
    named = api.DeleteRegisteredModelRequest(project="p", name="m")
    assert by_id == written_to(created) == ("registry", "model", "7")
    assert written_to(named) == ("registry", "model named", "p", "m")
    assert written_to(api.DeleteModelVersionRequest(project="p", registered_model_name="m")) == (
        written_to(named)
    )
    # The project unnamed is the default one.
    assert written_to(api.RenameRegisteredModelRequest(name="m")) == written_to(
        api.RenameRegisteredModelRequest(project="default", name="m")
    )


def test_a_new_version_of_an_artifact_is_numbered_under_its_name() -> None:
    artifact = pb.Artifact(project="p", name="dataset")
    assert written_to(api.CreateArtifactRequest(artifact=artifact, new_version=True)) == (
        "registry",
        "artifact named",
        "p",
        "dataset",
    )
    assert written_to(api.CreateArtifactRequest(artifact=artifact)) is None


def test_a_version_is_its_own_and_a_new_model_or_an_artifact_is_nothing() -> None:
    assert written_to(api.SetModelVersionTagRequest(model_version_id="3")) == (
        "registry",
        "version",
        "3",
    )
    assert written_to(api.CreateRegisteredModelRequest()) is None
    assert written_to(api.DeleteArtifactRequest(id="5")) is None
    assert written_to(api.SetRegisteredModelAliasRequest()) is None  # refused by its call
