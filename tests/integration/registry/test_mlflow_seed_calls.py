"""MLflow's registry calls (seed 002) give MLflow's answers."""

import pytest

import cairn
from cairn.exceptions import InvalidArgumentError, NotFoundError
from cairn.types import MlflowModelVersion, ModelVersion


@pytest.fixture
async def churn(mr_client: cairn.ModelRegistryAPIClient) -> str:
    await mr_client.create_registered_model("churn")
    await mr_client.create_registered_model("other")
    for n in range(3):
        await mr_client.create_model_version("churn", f"s3://b/churn/{n}", f"run{n}", {"n": str(n)})
    await mr_client.create_model_version("other", "s3://b/other/0", "run0")
    return "churn"


async def test_search_model_versions_filters_by_the_models_name(mr_client, churn) -> None:
    found = await mr_client.search_model_versions("name='churn'")
    assert sorted(v.version for v in found) == [1, 2, 3]
    assert {v.name for v in found} == {"churn"}
    assert [v.version for v in await mr_client.search_model_versions("run_id = 'run0'")] == [1, 1]
    by_source = await mr_client.search_model_versions("source_path = 's3://b/churn/2'")
    assert [(v.name, v.version) for v in by_source] == [("churn", 3)]
    tagged = await mr_client.search_model_versions("name = 'churn' AND tags.n = '1'")
    assert [v.version for v in tagged] == [2]
    # The version's own (Kubeflow) name has its own field.
    assert [v.name for v in await mr_client.search_model_versions("version_name = '2'")] == [
        "churn"
    ]


async def test_search_registered_models_orders_by_name_across_pages(mr_client) -> None:
    names = ["delta", "alpha", "echo", "charlie", "bravo"]
    for name in names:
        await mr_client.create_registered_model(name)
    for direction, expected in (("ASC", sorted(names)), ("DESC", sorted(names, reverse=True))):
        seen, token = [], None
        while True:
            page = await mr_client.search_registered_models(
                max_results=2, order_by=[f"name {direction}"], page_token=token
            )
            seen += [m.name for m in page]
            token = page.token
            if token is None:
                break
        assert seen == expected
    # A model created between pages lands where its name sorts, never twice.
    first = await mr_client.search_registered_models(max_results=2, order_by=["name ASC"])
    await mr_client.create_registered_model("aardvark")
    rest = await mr_client.search_registered_models(
        max_results=10, order_by=["name ASC"], page_token=first.token
    )
    assert [m.name for m in first] + [m.name for m in rest] == sorted(names)


async def test_create_model_version_takes_run_link_fifth(mr_client) -> None:
    await mr_client.create_registered_model("linked")
    created = await mr_client.create_model_version(
        "linked", "s3://b/m", "run-9", {"k": "v"}, "http://mlflow/runs/9", "first"
    )
    assert created.run_link == "http://mlflow/runs/9"
    assert created.description == "first"
    assert created.run_id == "run-9" and created.tags == {"k": "v"}


async def test_model_versions_carry_mlflows_fields(mr_client, churn) -> None:
    version = await mr_client.get_model_version("churn", 2)
    assert isinstance(version, MlflowModelVersion)
    assert version.name == "churn" and version.version == 2 and version.version_name == "2"
    assert version.run_id == "run1" and version.source == "s3://b/churn/1"
    assert version.current_stage == "None" and version.status == "READY"
    # Kubeflow's calls keep Kubeflow's meaning of name.
    kubeflow = await mr_client.get_model_version_by_id(version.id)
    assert type(kubeflow) is ModelVersion and kubeflow.name == "2"
    assert kubeflow.registered_model_name == "churn"


async def test_models_and_versions_carry_mlflows_timestamps_user_and_status_message(
    mr_client, churn
) -> None:
    """MLflow's creation_timestamp, last_updated_timestamp (ms since the epoch, the names
    order_by takes), user_id and status_message. Each raised AttributeError before."""
    model = await mr_client.get_registered_model("churn")
    assert model.creation_timestamp == model.create_time_since_epoch
    assert model.last_updated_timestamp == model.last_update_time_since_epoch
    assert isinstance(model.creation_timestamp, int) and model.creation_timestamp > 0
    version = await mr_client.get_model_version("churn", 2)
    assert version.creation_timestamp == version.create_time_since_epoch
    assert version.last_updated_timestamp == version.last_update_time_since_epoch
    assert isinstance(version.last_updated_timestamp, int)
    # None unset, as MLflow's store returns them; user_id is who created it: the author.
    assert (version.user_id, version.status_message) == (None, None)
    authored = await mr_client.upsert_model_version(ModelVersion("v9", author="ana"), model.id)
    assert authored.user_id == "ana"


async def test_registered_models_carry_latest_versions(mr_client, churn) -> None:
    await mr_client.transition_model_version_stage("churn", 1, "Production")
    model = await mr_client.get_registered_model("churn")
    assert [(v.current_stage, v.version) for v in model.latest_versions] == [
        ("None", 3),
        ("Production", 1),
    ]
    assert {v.name for v in model.latest_versions} == {"churn"}
    (searched,) = await mr_client.search_registered_models("name = 'churn'")
    assert [v.version for v in searched.latest_versions] == [3, 1]


async def test_update_and_copy_and_stages(mr_client, churn) -> None:
    updated = await mr_client.update_registered_model("churn", "predicts churn")
    assert updated.description == "predicts churn"
    version = await mr_client.update_model_version("churn", 2, "second")
    assert version.description == "second" and version.name == "churn"
    assert (await mr_client.get_model_version("churn", 2)).description == "second"
    assert await mr_client.get_model_version_stages("churn", 2) == [
        "None",
        "Staging",
        "Production",
        "Archived",
    ]
    copied = await mr_client.copy_model_version("models:/churn/2", "churn-copy")
    assert copied.name == "churn-copy" and copied.version == 1
    assert copied.source == "models:/churn/2" and copied.run_id == "run1"
    assert copied.description == "second" and copied.tags == {"n": "1"}
    again = await mr_client.copy_model_version("models:/churn/latest", "churn-copy")
    assert again.version == 2 and again.source == "models:/churn/3"
    with pytest.raises(NotFoundError):
        await mr_client.copy_model_version("models:/churn/Staging", "churn-copy")


async def test_version_tags_by_stage(mr_client, churn) -> None:
    await mr_client.transition_model_version_stage("churn", 2, "Staging")
    await mr_client.set_model_version_tag("churn", key="checked", value="yes", stage="Staging")
    assert (await mr_client.get_model_version("churn", 2)).tags["checked"] == "yes"
    await mr_client.delete_model_version_tag("churn", key="checked", stage="staging")
    assert "checked" not in (await mr_client.get_model_version("churn", 2)).tags
    with pytest.raises(ValueError):
        await mr_client.set_model_version_tag("churn", 2, "k", "v", stage="Staging")
    with pytest.raises(NotFoundError):
        await mr_client.set_model_version_tag("churn", key="k", value="v", stage="Production")


async def test_max_results_beyond_one_server_page_is_gathered(
    mr_client, churn, monkeypatch
) -> None:
    from cairn.types import _paging

    monkeypatch.setattr(_paging, "SERVER_PAGE", 2)  # a page of 2 stands for 1,000
    everything = await mr_client.search_model_versions(order_by=["id ASC"])
    assert [(v.name, v.version) for v in everything] == [
        ("churn", 1),
        ("churn", 2),
        ("churn", 3),
        ("other", 1),
    ]
    assert everything.token is None
    first = await mr_client.search_model_versions(max_results=3, order_by=["id ASC"])
    assert len(first) == 3 and first.token is not None
    rest = await mr_client.search_model_versions(order_by=["id ASC"], page_token=first.token)
    assert [(v.name, v.version) for v in rest] == [("other", 1)]


async def test_search_registered_models_orders_by_name_by_default(mr_client) -> None:
    """MLflow's default order; Kubeflow's get_registered_models keeps creation order."""
    for name in ("zeta", "alpha", "mid"):
        await mr_client.create_registered_model(name)
    assert [m.name for m in await mr_client.search_registered_models()] == [
        "alpha",
        "mid",
        "zeta",
    ]


async def test_search_model_versions_orders_by_version_number(mr_client, churn) -> None:
    newest_first = await mr_client.search_model_versions(
        "name = 'churn'", order_by=["version_number DESC"]
    )
    assert [v.version for v in newest_first] == [3, 2, 1]
    oldest_first = await mr_client.search_model_versions(
        "name = 'churn'", max_results=2, order_by=["version_number ASC"]
    )
    assert [v.version for v in oldest_first] == [1, 2]
    rest = await mr_client.search_model_versions(
        "name = 'churn'",
        order_by=["version_number ASC"],
        page_token=oldest_first.next_page_token,
    )
    assert [v.version for v in rest] == [3]


@pytest.mark.parametrize("search", ["search_registered_models", "search_model_versions"])
async def test_max_results_is_checked_as_the_tracking_searches_check_it(
    mr_client, search: str
) -> None:
    """None raised a bare TypeError, as did 2.5, and True was taken for 1."""
    await mr_client.create_registered_model("counted")
    call = getattr(mr_client, search)
    assert isinstance(await call(max_results=None), list)  # the default
    for wrong in (2.5, True, "3", 0, -1):
        with pytest.raises(InvalidArgumentError) as refused:
            await call(max_results=wrong)
        assert refused.value.message.startswith("max_results: "), wrong
