"""Arguments the registry client refuses itself, before any call: each raises
`InvalidArgumentError` naming the argument (docs/client.md, "Errors"), never a raw
Python error, a server's name for another field, or a call that changes nothing."""

from collections.abc import Awaitable
from typing import Any

import pytest

import cairn
from cairn.exceptions import InvalidArgumentError
from cairn.types import DocArtifact, ListOptions, ModelArtifact, ModelVersion, RegisteredModel


async def _refused(call: Awaitable[Any]) -> list[str]:
    """The arguments the InvalidArgumentError of call names."""
    with pytest.raises(InvalidArgumentError) as raised:
        await call
    assert raised.value.reason == "INVALID_ARGUMENT"
    return [field for field, _ in raised.value.field_violations]


async def test_an_update_with_no_description_is_refused_as_in_mlflow(mr_client) -> None:
    """MLflow raises "Attempting to update model version with no new field values." (and
    the same of a registered model); Cairn answered the object unchanged."""
    await mr_client.create_registered_model("churn", description="kept")
    await mr_client.create_model_version("churn", "s3://b/churn/1", description="kept")
    assert await _refused(mr_client.update_model_version("churn", 1)) == ["description"]
    assert await _refused(mr_client.update_registered_model("churn")) == ["description"]
    assert (await mr_client.get_model_version("churn", 1)).description == "kept"
    assert (await mr_client.get_registered_model("churn")).description == "kept"


async def test_an_update_with_no_description_is_refused_before_any_call(mr_client) -> None:
    """Before the model is looked up: a model that does not exist is not NOT_FOUND."""
    assert await _refused(mr_client.update_model_version("absent", 1, None)) == ["description"]
    assert await _refused(mr_client.update_registered_model("absent", None)) == ["description"]


async def test_a_description_that_is_no_string_is_refused_naming_it(mr_client) -> None:
    """update_model_version(name, 1, 5) raised a bare TypeError naming nothing, after a
    call had looked the version up (update_registered_model named its argument)."""
    await mr_client.create_registered_model("churn")
    await mr_client.create_model_version("churn", "s3://b/churn/1", description="kept")
    for description in (5, ["x"], b"x"):
        assert await _refused(mr_client.update_model_version("churn", 1, description)) == [
            "description"
        ]
    assert (await mr_client.get_model_version("churn", 1)).description == "kept"


async def test_an_artifact_stored_without_a_uri_reads_back_without_one(mr_client) -> None:
    """Every unset text field of an artifact read back None but its uri, which read ''."""
    model = await mr_client.upsert_registered_model(RegisteredModel("m"))
    version = await mr_client.upsert_model_version(ModelVersion("v1"), model.id)
    stored = await mr_client.upsert_model_artifact(ModelArtifact("weights"), version.id)
    [found] = await mr_client.get_model_version_artifacts(version.id)
    assert (stored.uri, found.uri, found.description) == (None, None, None)


async def test_each_upsert_refuses_an_object_of_another_type(mr_client) -> None:
    """upsert_registered_model("name") raised AttributeError; each upsert names its
    object argument instead, and nothing is made."""
    model = await mr_client.upsert_registered_model(RegisteredModel("m"))
    version = await mr_client.upsert_model_version(ModelVersion("v1"), model.id)
    doc = DocArtifact("readme", uri="https://example.com/README.md")
    refusals = {
        "registered_model": mr_client.upsert_registered_model("name"),
        "model_version": mr_client.upsert_model_version(RegisteredModel("v2"), model.id),
        "model_artifact": mr_client.upsert_model_artifact(doc, version.id),
        "artifact": mr_client.upsert_model_version_artifact(ModelVersion("v3"), version.id),
    }
    for argument, call in refusals.items():
        assert await _refused(call) == [argument]
    assert [m.name for m in await mr_client.get_registered_models()] == ["m"]
    assert [v.name for v in await mr_client.get_model_versions(model.id)] == ["v1"]
    assert await mr_client.get_model_version_artifacts(version.id) == []


async def test_each_upsert_still_takes_its_own_types(mr_client) -> None:
    model = await mr_client.upsert_registered_model(RegisteredModel("m"))
    version = await mr_client.upsert_model_version(ModelVersion("v1"), model.id)
    stored = await mr_client.upsert_model_artifact(ModelArtifact("weights", uri="s3://b/w"))
    assert isinstance(stored, ModelArtifact)
    for artifact in (ModelArtifact("onnx", uri="s3://b/o"), DocArtifact("doc", uri="s3://b/d")):
        assert isinstance(
            await mr_client.upsert_model_version_artifact(artifact, version.id), type(artifact)
        )


@pytest.mark.parametrize("limit", [1001, 2**31 - 1, -1])
async def test_a_list_limit_out_of_range_names_limit(
    mr_client: cairn.ModelRegistryAPIClient, limit: int
) -> None:
    """It named page_size, the server's field, where a limit of the wrong type names
    limit: the caller gave `ListOptions(limit=...)`."""
    options = ListOptions(limit=limit)
    assert await _refused(mr_client.get_registered_models(options)) == ["limit"]
    assert await _refused(mr_client.get_model_artifacts(None, options)) == ["limit"]
    of_no_integer = ListOptions(limit="10")  # type: ignore[arg-type]
    assert await _refused(mr_client.get_registered_models(of_no_integer)) == ["limit"]


async def test_a_list_limit_of_a_whole_server_page_is_taken(mr_client) -> None:
    await mr_client.upsert_registered_model(RegisteredModel("m"))
    assert len(await mr_client.get_registered_models(ListOptions(limit=1000))) == 1
    assert len(await mr_client.get_registered_models(ListOptions(limit=0))) == 1
