"""Every code example of the Kubeflow Model Registry client documentation (the seed),
run as written against the live server, with `model_registry` replaced by `cairn`."""

import os

import pytest

import cairn
from cairn import ModelRegistryAPIClient
from cairn.types import (
    DocArtifact,
    ListOptions,
    ModelArtifact,
    ModelVersion,
    Pager,
    RegisteredModel,
)
from cairn.utils import s3_uri_from


def test_connection_constructors(server_port: int) -> None:
    insecure_mr_client = ModelRegistryAPIClient.insecure_connection(
        "127.0.0.1",
        str(server_port),
        # optionally, you can identify yourself
        # user_token=os.environ["MY_TOKEN"]
    )
    mr_client = ModelRegistryAPIClient.secure_connection(
        "localhost",
        "443",
        user_token="token",  # this is necessary on a secure connection
        # optionally, use a custom_ca
        # custom_ca=os.environ["MY_CERT"]
    )
    assert insecure_mr_client.project == mr_client.project == "default"


@pytest.fixture
def s3_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_S3_BUCKET", "cool-bucket")
    monkeypatch.setenv("AWS_S3_ENDPOINT", "http://minio:9000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


async def test_register_objects_and_query_them(
    mr_client: cairn.ModelRegistryAPIClient, s3_environment: None
) -> None:
    async def register_a_model():
        model = await mr_client.upsert_registered_model(
            RegisteredModel(
                name="HAL",
                owner="me ",
            )
        )
        assert model.id  # this should be valid now

        # we need a registered model to associate the version to
        version = await mr_client.upsert_model_version(
            ModelVersion(
                name="9000",
                author="Mr. Tom A.I.",
                external_id="HAL-9000",
            ),
            model.id,
        )
        assert version.id

        # we need a version to associate a trained model to
        trained_model = await mr_client.upsert_model_artifact(
            ModelArtifact(
                name="HAL-core",
                uri=s3_uri_from("build/onnx/hal.onnx", "cool-bucket"),
                model_format_name="onnx",
                model_format_version="1",
                storage_key="secret_secret",
            ),
            version.id,
        )
        assert trained_model.id
        return version, trained_model

    version, trained_model = await register_a_model()
    assert (
        trained_model.uri
        == "s3://cool-bucket/build/onnx/hal.onnx?endpoint=http://minio:9000&defaultRegion=us-east-1"
    )

    readme = await mr_client.upsert_model_version_artifact(
        DocArtifact(
            name="README",
            uri="https://github.com/my-org/my-model/blob/main/README.md",
            description="Model information",
        ),
        version.id,
    )
    assert isinstance(readme, DocArtifact) and readme.id

    new_model = await mr_client.upsert_registered_model(RegisteredModel("new_model"))
    assert new_model.id is not None
    maybe_new_model = await mr_client.get_registered_model_by_id(new_model.id)
    assert maybe_new_model == new_model  # True

    artifacts = await mr_client.get_model_version_artifacts(version.id)
    assert {a.name for a in artifacts} == {"HAL-core", "README"}


async def test_external_ids_and_queries_by_params(mr_client: cairn.ModelRegistryAPIClient) -> None:
    trained_model = ModelArtifact(
        name="my_model_name",
        uri="resource_URI",
        description="Model description",
        external_id="unique_reference",
    )
    # As a version is a context, we can have the same external_id as the above
    version = ModelVersion(
        name="v1.0",
        author="model author",
        external_id="unique_reference",
    )
    # Registering this will cause an error!
    # model = RegisteredModel(
    #     name="my_model_name",
    #     external_id="unique_reference",  # this wouldn't be unique
    # )
    model = RegisteredModel(
        name="my_model_name",
        external_id="another_unique_reference",
    )
    model = await mr_client.upsert_registered_model(model)
    assert model.id is not None
    another_version = await mr_client.upsert_model_version(version, model.id)
    await mr_client.upsert_model_artifact(trained_model, another_version.id)
    with pytest.raises(cairn.exceptions.AlreadyExistsError) as clash:
        await mr_client.upsert_registered_model(
            RegisteredModel(name="other", external_id="unique_reference")
        )
    assert clash.value.reason == "EXTERNAL_ID_ALREADY_EXISTS"

    # We can get the model artifact associated to a version
    another_trained_model = await mr_client.get_model_artifact_by_params(
        name="my_model_name", model_version_id=another_version.id
    )
    # Or by its unique identifier
    by_reference = await mr_client.get_model_artifact_by_params(external_id="unique_reference")
    assert by_reference is not None
    assert by_reference == another_trained_model and by_reference.description == "Model description"
    # Same thing for a version
    found_version = await mr_client.get_model_version_by_params(external_id="unique_reference")
    assert found_version == another_version
    # Or for a model
    model_again = await mr_client.get_registered_model_by_params(
        external_id="another_unique_reference"
    )
    assert model_again is not None
    # Adding a version moved the model's update time (as MLflow does); the rest is equal.
    updated, before = model_again.last_update_time_since_epoch, model.last_update_time_since_epoch
    assert updated is not None and before is not None
    assert updated > before
    model = model_again
    # We can also get a version by its name and associated model id
    found_version = await mr_client.get_model_version_by_params(
        version="v1.0", registered_model_id=model.id
    )
    assert found_version == another_version
    assert (
        await mr_client.get_model_version_by_params(version="v1.0", registered_model_id="x") is None
    )
    # And we can get a model by simply calling its name
    assert await mr_client.get_registered_model_by_params(name="my_model_name") == model


async def test_query_multiple_objects_and_list_options(
    mr_client: cairn.ModelRegistryAPIClient,
) -> None:
    created = [
        await mr_client.upsert_registered_model(RegisteredModel(f"m{n:02}")) for n in range(60)
    ]
    assert created[0].id is not None
    version = await mr_client.upsert_model_version(ModelVersion("v1"), created[0].id)
    for n in range(25):
        await mr_client.upsert_model_artifact(ModelArtifact(f"a{n:02}", uri="u"), version.id)

    models = await mr_client.get_registered_models()
    versions = await mr_client.get_model_versions(created[0].id)
    # We can get a list of the first 20 model artifacts
    all_model_artifacts = await mr_client.get_model_artifacts()
    assert len(models) == 20 and len(all_model_artifacts) == 20
    assert [v.name for v in versions] == ["v1"]

    options = ListOptions(limit=50)
    first_50_models = await mr_client.get_registered_models(options)
    assert [m.name for m in first_50_models] == [m.name for m in created[:50]]
    # By default we get ascending order
    options = ListOptions.order_by_creation_time(is_asc=False)
    last_50_models = await mr_client.get_registered_models(options)
    assert [m.name for m in last_50_models] == [m.name for m in reversed(created)][:20]


async def test_pager(mr_client: cairn.ModelRegistryAPIClient) -> None:
    for n in range(7):
        await mr_client.upsert_registered_model(RegisteredModel(f"paged{n}"))
    models = Pager(mr_client.get_registered_models)
    names = [model.name async for model in models]
    assert names == [f"paged{n}" for n in range(7)]

    model = await mr_client.upsert_registered_model(RegisteredModel("with-artifacts"))
    assert model.id is not None
    mv = await mr_client.upsert_model_version(ModelVersion("1.0"), model.id)
    mv_id = mv.id
    assert mv_id is not None
    for n in range(3):
        await mr_client.upsert_model_version_artifact(DocArtifact(f"doc{n}", uri="u"), mv_id)
    model_version_artifacts = Pager(lambda o: mr_client.get_model_version_artifacts(mv_id, o))
    reverse_model_version_artifacts = (
        model_version_artifacts.order_by_creation_time().descending().limit(100)
    )
    page = await reverse_model_version_artifacts.next_page()
    assert [a.name for a in page] == ["doc2", "doc1", "doc0"]


def test_create_objects_locally() -> None:
    trained_model = ModelArtifact(
        name="model-exec",
        uri="resource_URI",
        description="Model description",
        model_format_name="onnx",
        model_format_version="1",
    )
    version = ModelVersion(
        name="v1.0",
        author="model author",
    )
    model = RegisteredModel(
        name="model",
        owner="team",
    )
    assert (trained_model.id, version.id, model.id) == (None, None, None)
    assert RegisteredModel("new_model") == RegisteredModel(name="new_model")
    assert RegisteredModel("a") != RegisteredModel("a", owner="b")
    assert os.environ.get("CAIRN_NEVER_SET") is None
