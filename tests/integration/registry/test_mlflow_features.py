"""MLflow's registry features: aliases, stages, tags, search, rename, delete."""

import asyncio
import base64
import struct
import time

import pytest

import cairn
from cairn.exceptions import AlreadyExistsError, InvalidArgumentError, NotFoundError
from cairn.types import (
    DocArtifact,
    MlflowModelVersion,
    ModelArtifact,
    ModelVersion,
    RegisteredModel,
)
from cairn.types._registry import PropertyValue
from tests.conftest import sealed_by


@pytest.fixture
async def churn(mr_client: cairn.ModelRegistryAPIClient) -> RegisteredModel:
    model = await mr_client.create_registered_model("churn", tags={"team": "growth"})
    for n in range(3):
        await mr_client.create_model_version("churn", f"s3://b/churn/{n}", run_id=f"run{n}")
    return model


async def test_versions_are_numbered_and_never_reused(mr_client, churn) -> None:
    assert [v.version for v in await mr_client.get_model_versions(churn.id)] == [1, 2, 3]
    await mr_client.delete_model_version("churn", 3)
    created = await mr_client.create_model_version("churn", "s3://b/churn/new")
    assert created.version == 4 and created.version_name == "4" and created.name == "churn"
    with pytest.raises(NotFoundError):
        await mr_client.get_model_version("churn", 3)


async def test_fifty_concurrent_creations_get_fifty_distinct_numbers(mr_client) -> None:
    model = await mr_client.upsert_registered_model(RegisteredModel("busy"))
    created = await asyncio.gather(
        *(mr_client.upsert_model_version(ModelVersion(f"c{n}"), model.id) for n in range(50))
    )
    assert sorted(v.version for v in created) == list(range(1, 51))


async def test_aliases_move_atomically(mr_client, churn) -> None:
    await mr_client.set_registered_model_alias("churn", "champion", 1)
    assert (await mr_client.get_model_version_by_alias("churn", "champion")).version == 1
    await mr_client.set_registered_model_alias("churn", "champion", 2)
    assert (await mr_client.get_model_version_by_alias("churn", "champion")).version == 2
    assert (await mr_client.get_registered_model("churn")).aliases == {"champion": 2}
    assert (await mr_client.get_model_version("churn", 2)).aliases == ["champion"]
    assert (await mr_client.get_model_version("churn", 1)).aliases == []
    await mr_client.delete_registered_model_alias("churn", "champion")
    with pytest.raises(NotFoundError):
        await mr_client.get_model_version_by_alias("churn", "champion")


async def test_deleting_an_alias_the_model_lacks_does_nothing(mr_client, churn) -> None:
    """As MLflow's store, and as deleting a missing tag: the model must exist, the alias
    need not. Before, it raised NotFoundError ALIAS_NOT_FOUND naming the model by its id."""
    await mr_client.set_registered_model_alias("churn", "champion", 1)
    await mr_client.delete_registered_model_alias("churn", "challenger")
    assert (await mr_client.get_registered_model("churn")).aliases == {"champion": 1}
    with pytest.raises(NotFoundError) as raised:
        await mr_client.delete_registered_model_alias("no-such-model", "champion")
    assert raised.value.reason == "REGISTERED_MODEL_NOT_FOUND"
    assert "no-such-model" in raised.value.message


@pytest.mark.parametrize(
    "alias",
    [
        *("latest", "LATEST", "v3", "version12", "", "-x", "a b", "\u0301x", "a\u200db"),
        # Marks that show nothing, or follow no letter: look-alikes of "champion", "latest".
        *("champion\ufe0f", "latest\u034f", "_\u0301", "1\u0301"),
    ],
)
async def test_reserved_and_malformed_aliases_are_refused(mr_client, churn, alias: str) -> None:
    with pytest.raises(InvalidArgumentError):
        await mr_client.set_registered_model_alias("churn", alias, 1)


async def test_aliases_take_letters_of_any_script_in_one_form(mr_client, churn) -> None:
    """MLflow takes any word character in an alias; "café" and "生产" were refused as
    not of ASCII letters, digits, '_', '-' and '.'. Letters with marks (Hindi's vowel
    signs) are taken too, and each alias has one form (NFC): "café" typed with a
    combining accent, or "Kx" with the Kelvin sign, is the same alias as the composed
    one, never a second alias that looks the same."""
    for alias in ("café", "生产", "modèle_2.1", "हिन्दी"):
        await mr_client.set_registered_model_alias("churn", alias, 2)
        assert (await mr_client.get_model_version_by_alias("churn", alias)).version == 2
    await mr_client.set_registered_model_alias("churn", "cafe\u0301", 3)
    await mr_client.set_registered_model_alias("churn", "\u212ax", 1)
    assert (await mr_client.get_model_version_by_alias("churn", "café")).version == 3
    assert (await mr_client.get_model_version_by_alias("churn", "Kx")).version == 1
    assert (await mr_client.get_registered_model("churn")).aliases == {
        "café": 3,
        "生产": 2,
        "modèle_2.1": 2,
        "हिन्दी": 2,
        "Kx": 1,
    }
    await mr_client.delete_registered_model_alias("churn", "\u212ax")
    assert "Kx" not in (await mr_client.get_registered_model("churn")).aliases


@pytest.mark.parametrize("alias", ["", " ", "a b", "-x", "x" * 300, "latest", "v3"])
async def test_a_lookup_or_delete_of_an_alias_that_cannot_be_set_is_refused_alike(
    mr_client, churn, alias: str
) -> None:
    """An empty alias was looked up as version 0 ("model version 0 not found"), and
    other aliases no version can have were NOT_FOUND, while setting them was refused.
    Deleting one did nothing, as deleting an alias the model lacks does, where a typo
    of a name must say so."""
    with pytest.raises(InvalidArgumentError) as when_set:
        await mr_client.set_registered_model_alias("churn", alias, 1)
    with pytest.raises(InvalidArgumentError) as looked_up:
        await mr_client.get_model_version_by_alias("churn", alias)
    with pytest.raises(InvalidArgumentError) as deleted:
        await mr_client.delete_registered_model_alias("churn", alias)
    assert looked_up.value.message == deleted.value.message == when_set.value.message


async def test_an_alias_on_a_missing_version_is_not_found(mr_client, churn) -> None:
    with pytest.raises(NotFoundError) as raised:
        await mr_client.set_registered_model_alias("churn", "champion", 99)
    assert raised.value.reason == "MODEL_VERSION_NOT_FOUND"


async def test_stage_transitions_and_latest_versions(mr_client, churn) -> None:
    await mr_client.transition_model_version_stage("churn", 1, "Production")
    await mr_client.transition_model_version_stage("churn", 2, "staging")
    moved = await mr_client.transition_model_version_stage(
        "churn", 3, "Production", archive_existing_versions=True
    )
    assert moved.stage == "Production"
    assert (await mr_client.get_model_version("churn", 1)).stage == "Archived"
    latest = {v.stage: v.version for v in await mr_client.get_latest_versions("churn")}
    assert latest == {"Archived": 1, "Staging": 2, "Production": 3}
    assert [v.version for v in await mr_client.get_latest_versions("churn", ["Staging"])] == [2]
    with pytest.raises(ValueError, match="'Prod' is not one of None, Staging, Production"):
        await mr_client.transition_model_version_stage("churn", 1, "Prod")


async def test_promoting_or_deleting_a_version_updates_its_models_update_time(
    mr_client, churn
) -> None:
    """As MLflow's SqlAlchemyStore: a stage transition and a version's deletion set the
    model's last_updated_timestamp, so ordering models by it shows the promotion. Both
    left it at the last version's creation before. (PostgreSQL runs on this machine's
    clock, which `before` reads.)"""

    async def updated_since(before: int) -> bool:
        model = await mr_client.get_registered_model("churn")
        return (model.last_update_time_since_epoch or 0) >= before

    before = int(time.time() * 1000)
    await mr_client.transition_model_version_stage("churn", 1, "Production")
    assert await updated_since(before)
    before = int(time.time() * 1000)
    await mr_client.delete_model_version("churn", 3)
    assert await updated_since(before)


async def test_versions_order_by_model_name_then_newest_first_as_in_mlflow(mr_client) -> None:
    """MLflow's search_model_versions ordered by model name orders each model's versions
    newest first, as the ties of a name order. Before, they came in creation order."""
    for name in ("zeta", "alpha"):
        await mr_client.create_registered_model(name)
        for n in range(3):
            await mr_client.create_model_version(name, f"s3://b/{name}/{n}")

    async def listed(*args: object, **kwargs: object) -> list[tuple[str, int]]:
        found = await mr_client.search_model_versions(*args, order_by=["name ASC"], **kwargs)
        return [(v.name, v.version) for v in found]

    newest_first = [("alpha", 3), ("alpha", 2), ("alpha", 1), ("zeta", 3), ("zeta", 2), ("zeta", 1)]
    assert await listed() == newest_first
    assert await listed("name = 'zeta'") == newest_first[3:]
    descending = await mr_client.search_model_versions(order_by=["name DESC"])
    assert [(v.name, v.version) for v in descending] == newest_first[3:] + newest_first[:3]
    paged, token = [], None
    while True:  # a version a page: the token carries the tie's place
        page = await mr_client.search_model_versions(
            max_results=1, order_by=["name ASC"], page_token=token
        )
        paged += [(v.name, v.version) for v in page]
        if not (token := page.token):
            break
    assert paged == newest_first


async def test_versions_come_last_updated_first_by_default_as_in_mlflow(mr_client) -> None:
    """MLflow's store orders search_model_versions by last_updated_timestamp DESC unless
    told otherwise; they came by model name, each model's newest first, before."""
    for name in ("zeta", "alpha"):
        await mr_client.create_registered_model(name)
        for n in range(2):
            await mr_client.create_model_version(name, f"s3://b/{name}/{n}")
    await mr_client.update_model_version("zeta", 1, "changed last")
    found = await mr_client.search_model_versions()
    assert [(v.name, v.version) for v in found] == [
        ("zeta", 1),
        ("alpha", 2),
        ("alpha", 1),
        ("zeta", 2),
    ]
    times = [v.last_updated_timestamp for v in found]
    assert times == sorted(times, reverse=True)
    one_model = await mr_client.search_model_versions("name = 'zeta'")
    assert [v.version for v in one_model] == [1, 2]


async def test_models_order_by_mlflows_timestamp_as_by_their_last_update(mr_client) -> None:
    """MLflow's store takes `timestamp` for `last_updated_timestamp` in a model search's
    order. Before, INVALID_ORDER_BY "order by one of create_time, update_time, id, name"."""
    for name in ("first", "second", "third"):
        await mr_client.create_registered_model(name)
    await mr_client.update_registered_model("first", "churn")  # now the latest update

    async def names(order: str) -> list[str]:
        return [m.name for m in await mr_client.search_registered_models(order_by=[order])]

    assert await names("timestamp DESC") == await names("last_updated_timestamp DESC")
    assert await names("timestamp DESC") == ["first", "third", "second"]
    assert await names("timestamp") == (await names("timestamp DESC"))[::-1]


async def test_orders_are_read_as_mlflow_reads_them(mr_client) -> None:
    """MLflow reads an order clause's key as a filter's (attribute. prefix, quotes,
    backticks): Cairn refused `attribute.name DESC` and `` `name` DESC`` with
    INVALID_ORDER_BY, and sorted a blank key by creation time rather than the default."""
    for name in ("beta", "alpha", "gamma"):
        await mr_client.create_registered_model(name)
        await mr_client.create_model_version(name, f"s3://b/{name}/1")

    async def names(order: str) -> list[str]:
        return [m.name for m in await mr_client.search_registered_models(order_by=[order])]

    for spelled in ("attribute.name DESC", "attributes.name DESC", "`name` DESC", '"name" DESC'):
        assert await names(spelled) == ["gamma", "beta", "alpha"], spelled
    assert await names("   ") == ["alpha", "beta", "gamma"]  # MLflow's default, name ASC
    await mr_client.create_model_version("beta", "s3://b/beta/2")
    versions = await mr_client.search_model_versions(
        "name = 'beta'", order_by=["attribute.version_number DESC"]
    )
    assert [v.version for v in versions] == [2, 1]
    with pytest.raises(InvalidArgumentError) as raised:
        await mr_client.search_registered_models(order_by=["tags.name"])
    assert raised.value.reason == "INVALID_ORDER_BY"


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda r: r.transition_model_version_stage("churn", 1, "Prod"), "stage"),
        (lambda r: r.get_latest_versions("churn", ["Staging", "Prod"]), "stages"),
        (lambda r: r.copy_model_version(f"runs:/{'a' * 32}/model", "copy"), "src_model_uri"),
        (lambda r: r.set_model_version_tag("churn", 2, "k", "v", stage="Staging"), "version"),
        (lambda r: r.set_model_version_tag("churn", None, "k", "v", stage="Prod"), "stage"),
        (lambda r: r.delete_model_version_tag("churn", None, "k", stage="Prod"), "stage"),
        (lambda r: r.search_registered_models(order_by=["name", "id"]), "order_by"),
    ],
)
async def test_a_bad_argument_is_an_invalid_argument_error_naming_it(
    mr_client, churn, call, argument: str
) -> None:
    """docs/client.md: every failure is a CairnError. These raised a bare ValueError,
    with no code, reason or field, that `except CairnError` let through."""
    with pytest.raises(InvalidArgumentError) as raised:
        await call(mr_client)
    assert isinstance(raised.value, ValueError)  # `except ValueError` still catches it
    assert raised.value.reason == "INVALID_ARGUMENT"
    assert [field for field, _ in raised.value.field_violations] == [argument]


async def test_one_stage_given_as_a_string_is_refused_as_no_list(mr_client, churn) -> None:
    """MLflow's stages are a list; a string was read letter by letter and refused for
    its first: "'P' is not one of ..."."""
    with pytest.raises(InvalidArgumentError) as raised:
        await mr_client.get_latest_versions("churn", "Production")
    assert raised.value.field_violations == [
        ("stages", "'Production' is no list of stages: pass ['Production']")
    ]


async def test_a_bad_stage_is_refused_before_any_call(mr_client, unique: str) -> None:
    """docs/client.md: a stage that is none of the stages raises before any call. The
    client looked the version up first: for a missing model, NotFoundError."""
    with pytest.raises(InvalidArgumentError) as raised:
        await mr_client.transition_model_version_stage(f"missing-{unique}", 1, "Prod")
    assert [field for field, _ in raised.value.field_violations] == ["stage"]


@pytest.mark.parametrize("stage", ["None", "Archived"])
async def test_archiving_existing_versions_outside_the_active_stages_is_refused(
    mr_client, churn, stage: str
) -> None:
    """MLflow raises an error for archive_existing_versions with a stage other than
    Staging or Production; it was accepted and silently ignored."""
    await mr_client.transition_model_version_stage("churn", 1, "Archived")
    with pytest.raises(InvalidArgumentError) as raised:
        await mr_client.transition_model_version_stage(
            "churn", 2, stage, archive_existing_versions=True
        )
    assert [field for field, _ in raised.value.field_violations] == ["archive_existing_versions"]
    assert raised.value.message.endswith(f"not to {stage}")
    assert (await mr_client.get_model_version("churn", 2)).stage == "None"


async def test_tags_set_and_delete(mr_client, churn) -> None:
    await mr_client.set_registered_model_tag("churn", "owner", "ana")
    await mr_client.set_model_version_tag("churn", 1, "validated", True)
    assert (await mr_client.get_registered_model("churn")).tags == {
        "team": "growth",
        "owner": "ana",
    }
    assert (await mr_client.get_model_version("churn", 1)).tags == {"validated": "True"}
    await mr_client.delete_registered_model_tag("churn", "team")
    await mr_client.delete_model_version_tag("churn", 1, "validated")
    assert (await mr_client.get_registered_model("churn")).tags == {"owner": "ana"}
    assert (await mr_client.get_model_version("churn", 1)).tags == {}


async def test_tags_leave_update_times_as_they_are(mr_client, churn) -> None:
    """As MLflow's store: a tag set or deleted (one never set too) moved the model's or
    version's last_updated_timestamp, so models listed by last update reordered."""
    model = await mr_client.get_registered_model("churn")
    version = await mr_client.get_model_version("churn", 1)
    await mr_client.set_registered_model_tag("churn", "owner", "ana")
    await mr_client.delete_registered_model_tag("churn", "never-set")
    await mr_client.set_model_version_tag("churn", 1, "validated", True)
    await mr_client.delete_model_version_tag("churn", 1, "validated")
    assert (await mr_client.get_registered_model("churn")).last_updated_timestamp == (
        model.last_updated_timestamp
    )
    assert (await mr_client.get_model_version("churn", 1)).last_updated_timestamp == (
        version.last_updated_timestamp
    )


async def test_search_with_the_filter_language(mr_client, churn) -> None:
    await mr_client.create_registered_model("fraud", tags={"team": "risk"})
    await mr_client.set_model_version_tag("churn", 2, "validated", "yes")
    found = await mr_client.search_registered_models("tags.team = 'growth' OR name LIKE 'fr%'")
    assert sorted(m.name for m in found) == ["churn", "fraud"]
    versions = await mr_client.search_model_versions(
        "model_name = 'churn' AND (run_id = 'run0' OR tags.validated = 'yes')"
    )
    assert sorted(v.version for v in versions) == [1, 2]
    assert [v.version for v in await mr_client.search_model_versions("version_number >= 3")] == [3]
    with pytest.raises(InvalidArgumentError) as raised:
        await mr_client.search_model_versions("colour = 'red'")
    assert raised.value.reason == "INVALID_FILTER"


async def test_integer_fields_compare_with_every_int64_and_refuse_what_lies_beyond(
    mr_client, churn
) -> None:
    """int64's least, -2**63, is a number its fields may be compared with; before, it was
    refused as INVALID_FILTER "compares with an integer", as 2**63 is."""
    for filter_text, expected in (
        (f"version_number > {-(2**63)}", [1, 2, 3]),
        (f"version_number = {-(2**63)}", []),
        (f"version_number < {2**63 - 1}", [1, 2, 3]),
    ):
        found = await mr_client.search_model_versions(filter_text)
        assert sorted(v.version for v in found) == expected, filter_text
    for beyond in (-(2**63) - 1, 2**63, 1.5):
        with pytest.raises(InvalidArgumentError) as raised:
            await mr_client.search_model_versions(f"version_number > {beyond}")
        assert raised.value.reason == "INVALID_FILTER"
        assert "compares with an integer" in raised.value.message


async def test_a_version_number_compares_with_a_quoted_integer_as_in_mlflow(
    mr_client, churn
) -> None:
    """MLflow's search_model_versions takes `version_number = '1'` for the number (its
    stores compare the quoted value with the version); it was refused INVALID_FILTER
    "compares with a number". Quoted text that spells no integer still is."""
    for filter_text, expected in (
        ("version_number = '2'", [2]),
        ("version_number >= '2'", [2, 3]),
        ("version_number IN ('1', 3)", [1, 3]),
        ("version != '-1'", [1, 2, 3]),
        ("version_number = '00000000000000000002'", [2]),
    ):
        found = await mr_client.search_model_versions(filter_text)
        assert sorted(v.version for v in found) == expected, filter_text
    for refused in ("'two'", "'1.0'", "' 1'", f"'{2**63}'", "'" + "1" * 20 + "'"):
        with pytest.raises(InvalidArgumentError) as raised:
            await mr_client.search_model_versions(f"version_number = {refused}")
        assert raised.value.reason == "INVALID_FILTER", refused


async def test_ids_compare_with_quoted_integers_as_version_numbers_do(mr_client, churn) -> None:
    """Ids are strings of digits to the client, and `version_number = '1'` is taken
    quoted: `registered_model_id = '3'` and `id = '<id>'` were refused INVALID_FILTER
    "compares with a number"."""
    model = await mr_client.get_registered_model("churn")
    second = await mr_client.get_model_version("churn", 2)
    for filter_text, expected in (
        (f"registered_model_id = '{model.id}'", [1, 2, 3]),
        (f"registered_model_id IN ('{model.id}', '999999')", [1, 2, 3]),
        (f"id = '{second.id}'", [2]),
    ):
        found = await mr_client.search_model_versions(filter_text)
        assert sorted(v.version for v in found) == expected, filter_text
    found_models = await mr_client.search_registered_models(f"id = '{model.id}'")
    assert [m.name for m in found_models] == ["churn"]


async def test_a_version_needs_a_source_and_tags_a_mapping_as_in_mlflow(mr_client) -> None:
    """MLflow's server requires a version's source; an empty one made a version whose
    download URI was '' and whose copies held no files. Tags that are no mapping raised
    a bare AttributeError ('list' object has no attribute 'items'). Both are refused
    before any call now, naming the argument."""
    await mr_client.create_registered_model("sourced")
    for source in ("", None):
        with pytest.raises(InvalidArgumentError) as raised:
            await mr_client.create_model_version("sourced", source)
        assert raised.value.field_violations[0][0] == "source"
    for tags in (["a"], {1: "x"}):
        with pytest.raises(InvalidArgumentError) as raised:
            await mr_client.create_registered_model("tagged", tags=tags)
        assert raised.value.field_violations[0][0] == "tags"
        with pytest.raises(InvalidArgumentError) as raised:
            await mr_client.create_model_version("sourced", "s3://b/m", tags=tags)
        assert raised.value.field_violations[0][0] == "tags"
    assert [m.name for m in await mr_client.search_registered_models()] == ["sourced"]
    assert await mr_client.search_model_versions() == []


async def test_stage_and_state_filters_take_any_case_and_refuse_unknown_names(
    mr_client, churn
) -> None:
    """Transitions take a stage in any case, and now so do filters; an unknown stage or
    state is INVALID_FILTER naming the known ones, as tracking's attributes.status is.
    Before, current_stage = 'production' found nothing, and current_stage = 'Prod',
    state = 'live' and state = 'FOO' found nothing, silently."""
    await mr_client.transition_model_version_stage("churn", 2, "production")

    async def versions(filter_text: str) -> list[int]:
        return sorted(v.version for v in await mr_client.search_model_versions(filter_text))

    assert await versions("current_stage = 'production'") == [2]
    assert await versions("stage IN ('PRODUCTION', 'none')") == [1, 2, 3]
    assert await versions("stage != 'NONE' AND state = 'live'") == [2]
    assert [m.name for m in await mr_client.search_registered_models("state = 'Live'")] == ["churn"]
    # LIKE matches the names as spelled, ILIKE in any case, as tracking's status (before,
    # INVALID_FILTER "stage supports =, != and IN").
    assert await versions("stage LIKE 'Prod%'") == [2]
    assert await versions("stage LIKE 'prod%'") == []
    assert await versions("current_stage NOT ILIKE 'NO%' OR state ILIKE 'archived'") == [2]
    stages, states = "None, Staging, Production, Archived", "LIVE, ARCHIVED"
    for search, filter_text, named in (
        (mr_client.search_model_versions, "current_stage = 'Prod'", stages),
        (mr_client.search_model_versions, "state = 'FOO'", states),
        (mr_client.search_registered_models, "state NOT IN ('LIVE', 'gone')", states),
        (mr_client.search_model_versions, "stage > 'None'", "=, !=, [NOT] IN, [NOT] LIKE"),
        # Never null: IS NULL found none and IS NOT NULL every one, where the docs refuse
        # every other operator.
        (mr_client.search_model_versions, "current_stage IS NULL", "=, !=, [NOT] IN"),
        (mr_client.search_registered_models, "state IS NOT NULL", "=, !=, [NOT] IN"),
    ):
        with pytest.raises(InvalidArgumentError) as raised:
            await search(filter_text)
        assert raised.value.reason == "INVALID_FILTER", filter_text
        assert named in raised.value.message, filter_text


async def test_a_field_left_empty_is_unset_to_a_filter(mr_client) -> None:
    """A description, owner, run, author or format left empty reads as None, as an
    unset external id does, and a filter now treats it alike: IS NULL finds it, and
    IS NOT NULL, !=, NOT IN and NOT LIKE do not. Before, IS NULL found none of them
    (their columns hold '', an external id NULL), IS NOT NULL found them all, and
    description != 'x' matched an empty description where external_id != 'x' matched
    no unset id."""
    from cairn.registry.v1 import registry_service_pb2 as api

    await mr_client.create_registered_model("bare")
    full = await mr_client.upsert_registered_model(
        RegisteredModel("full", owner="ann", description="d", external_id="m-full")
    )
    bare = await mr_client.create_model_version("bare", "s3://b/bare")
    assert (bare.run_id, bare.description) == (None, None)
    await mr_client.upsert_model_version(
        ModelVersion(
            "v1",
            author="ann",
            description="d",
            external_id="v-full",
            source_run_id="run1",
            source_uri="s3://b/full",
        ),
        full.id or "",
    )
    await mr_client.upsert_model_artifact(ModelArtifact("bare", "s3://b/a"))
    await mr_client.upsert_model_artifact(
        ModelArtifact("full", "s3://b/a", "d", "a-full", model_format_name="onnx")
    )

    async def models(filter_text: str) -> list[str]:
        return sorted(m.name for m in await mr_client.search_registered_models(filter_text))

    async def versions(filter_text: str) -> list[str]:
        return sorted(v.name for v in await mr_client.search_model_versions(filter_text))

    async def artifacts(filter_text: str) -> list[str]:
        request = api.ListArtifactsRequest(project=mr_client.project, filter=filter_text)
        reply = await mr_client._transport.unary(mr_client._stub.ListArtifacts, request)
        return sorted(a.name for a in reply.artifacts)

    for search, fields in (
        (models, ("description", "owner", "external_id")),
        (versions, ("description", "run_id", "author", "external_id")),
        (artifacts, ("description", "model_format_name", "external_id")),
    ):
        for field in fields:
            assert await search(f"{field} IS NULL") == ["bare"], field
            assert await search(f"{field} IS NOT NULL") == ["full"], field
            assert await search(f"{field} != 'x'") == ["full"], field
            assert await search(f"{field} NOT IN ('x')") == ["full"], field
            assert await search(f"{field} NOT LIKE 'x%'") == ["full"], field
            assert await search(f"{field} = ''") == [], field


async def test_hostile_filters_and_tokens_are_invalid_argument(mr_client, churn, pool) -> None:
    """A LIKE pattern ending in a lone backslash: PostgreSQL fails on it once a row's
    text gets past "ch" (INTERNAL), or, where the name index serves the LIKE, reads it
    as = 'ch'. A token nested too deep for the JSON decoder was INTERNAL."""
    with pytest.raises(InvalidArgumentError) as raised:
        await mr_client.search_registered_models("name LIKE 'ch\\'")
    assert raised.value.reason == "INVALID_FILTER"
    assert raised.value.metadata["position"] == "13"
    # Sealed as the service seals its tokens, to reach the decoder behind the seal.
    nested = await sealed_by(pool, "registry", base64.urlsafe_b64encode(b"[" * 3000).decode())
    with pytest.raises(InvalidArgumentError) as raised:
        await mr_client.search_model_versions("name = 'churn'", page_token=nested)
    assert raised.value.reason == "INVALID_PAGE_TOKEN"


async def test_versions_of_no_model_are_refused_not_every_models(mr_client, churn) -> None:
    """The raw ListModelVersions lists the whole project without a model id; this call
    names one model, so an id left empty (a caller's bug) listed every model's
    versions instead of being refused."""
    await mr_client.create_registered_model("other")
    await mr_client.create_model_version("other", "s3://b/other/1")
    for missing in ("", None):
        with pytest.raises(InvalidArgumentError) as raised:
            await mr_client.get_model_versions(missing)
        assert raised.value.field_violations == [("registered_model_id", "must not be empty")]


async def test_rename_and_delete(mr_client, churn) -> None:
    await mr_client.create_registered_model("taken")
    with pytest.raises(AlreadyExistsError) as raised:
        await mr_client.rename_registered_model("churn", "taken")
    assert raised.value.reason == "REGISTERED_MODEL_ALREADY_EXISTS"
    renamed = await mr_client.rename_registered_model("churn", "retention")
    assert renamed.id == churn.id and renamed.name == "retention"
    await mr_client.delete_registered_model("retention")
    assert await mr_client.get_registered_model_by_id(churn.id) is None
    assert await mr_client.get_model_versions(churn.id) == []


@pytest.mark.parametrize("name", ["a//b", "..", "x/..", "a/", "./m", "/a"])
async def test_no_model_is_created_or_renamed_to_a_name_no_uri_can_name(
    mr_client, pool, name: str
) -> None:
    """Such names were taken, and copy_model_version refused models:/<name>/1 as the
    copy's source; "/a" could not be written as a models:/ URI at all (models://a/1
    names another server). A model stored under one before the rule is still found,
    read, updated, renamed away and deleted by it."""
    with pytest.raises(InvalidArgumentError) as created:
        await mr_client.create_registered_model(name)
    assert [field for field, _ in created.value.field_violations] == ["registered_model.name"]
    model = await mr_client.create_registered_model("fine")
    with pytest.raises(InvalidArgumentError) as renamed:
        await mr_client.rename_registered_model("fine", name)
    assert [field for field, _ in renamed.value.field_violations] == ["new_name"]

    async def stored_before_the_rule(model_id: str) -> None:
        await pool.execute(
            "UPDATE registry.registered_models SET name = $2 WHERE id = $1", int(model_id), name
        )

    await stored_before_the_rule(model.id)
    assert (await mr_client.get_registered_model(name)).id == model.id
    await mr_client.update_registered_model(name, description="changed")
    read = await mr_client.get_registered_model_by_params(name=name)
    assert read is not None and read.description == "changed"
    read.owner = "ana"  # an upsert sends the name back, unchanged
    assert (await mr_client.upsert_registered_model(read)).owner == "ana"
    assert (await mr_client.rename_registered_model(name, "renamed-away")).id == model.id
    await stored_before_the_rule(model.id)
    await mr_client.delete_registered_model(name)
    assert await mr_client.get_registered_model_by_id(model.id) is None


async def test_download_uri_prefers_the_model_artifact(mr_client, churn) -> None:
    assert await mr_client.get_model_version_download_uri("churn", 1) == "s3://b/churn/0"
    version = await mr_client.get_model_version("churn", 1)
    await mr_client.upsert_model_artifact(
        ModelArtifact("weights", uri="s3://b/weights.onnx"), version.id
    )
    assert await mr_client.get_model_version_download_uri("churn", 1) == "s3://b/weights.onnx"


async def test_a_double_property_keeps_its_bits(mr_client) -> None:
    """jsonb's numbers (PostgreSQL's numeric) have no negative zero: -0.0 came back 0.0."""
    doubles: dict[str, PropertyValue] = {
        "zero": 0.0,
        "negative-zero": -0.0,
        "tiny": -5e-324,
        "big": -1.7976931348623157e308,
    }
    doubles |= {"inf": float("inf"), "-inf": float("-inf")}
    made = await mr_client.upsert_registered_model(
        RegisteredModel("doubles", custom_properties=doubles)
    )
    for read in (made, await mr_client.get_registered_model_by_id(made.id)):
        assert {k: struct.pack(">d", v) for k, v in read.custom_properties.items()} == {
            k: struct.pack(">d", v) for k, v in doubles.items()
        }


async def test_upsert_updates_fields_and_keeps_names(mr_client) -> None:
    model = await mr_client.upsert_registered_model(
        RegisteredModel(
            "typed", custom_properties={"flag": True, "count": 2**62, "ratio": 0.5, "note": "x"}
        )
    )
    assert model.custom_properties == {"flag": True, "count": 2**62, "ratio": 0.5, "note": "x"}
    model.custom_properties = {"count": 3, "extra": float("inf")}
    model.state = "ARCHIVED"
    model.description = "now archived"
    updated = await mr_client.upsert_registered_model(model)
    assert updated.custom_properties == {"count": 3, "extra": float("inf")}
    assert (updated.state, updated.description) == ("ARCHIVED", "now archived")
    model.custom_properties = {}
    assert (await mr_client.upsert_registered_model(model)).custom_properties == {}
    model.name = "renamed-by-upsert"
    with pytest.raises(InvalidArgumentError):
        await mr_client.upsert_registered_model(model)


async def test_an_upsert_leaves_what_its_item_holds_as_none_as_stored(mr_client) -> None:
    """As Kubeflow's client leaves None fields out of an update. Every field went in the
    mask, so an item made with an id and one field emptied all the others: description,
    external id, custom properties, an artifact's format and storage."""
    model = await mr_client.upsert_registered_model(
        RegisteredModel(
            "partial",
            owner="me",
            description="kept",
            external_id="m-ext",
            custom_properties={"p": 1},
        )
    )
    version = await mr_client.upsert_model_version(
        ModelVersion("v1", author="a", description="kept", external_id="v-ext"), model.id
    )
    artifact = await mr_client.upsert_model_artifact(
        ModelArtifact(
            "weights", uri="s3://b/w", description="kept", model_format_name="onnx", storage_key="k"
        ),
        version.id,
    )

    model = await mr_client.upsert_registered_model(
        RegisteredModel("partial", id=model.id, owner="you")
    )
    version = await mr_client.upsert_model_version(
        ModelVersion("v1", id=version.id, author="b"), model.id
    )
    artifact = await mr_client.upsert_model_artifact(
        ModelArtifact("weights", id=artifact.id, model_format_version="2"), version.id
    )
    assert (model.owner, model.description, model.external_id) == ("you", "kept", "m-ext")
    assert model.custom_properties == {"p": 1}
    assert (version.author, version.description, version.external_id) == ("b", "kept", "v-ext")
    assert (artifact.uri, artifact.description, artifact.storage_key) == ("s3://b/w", "kept", "k")
    assert (artifact.model_format_name, artifact.model_format_version) == ("onnx", "2")

    emptied = await mr_client.upsert_registered_model(
        RegisteredModel("partial", id=model.id, description="", custom_properties={})
    )
    assert (emptied.owner, emptied.description, emptied.custom_properties) == ("you", None, {})


async def test_a_state_is_taken_in_any_case_and_none_keeps_the_stored_one(mr_client) -> None:
    """A state of None, or a name in lower case, raised a bare ValueError ("None is not a
    valid RegisteredModelState"), no CairnError; a partial upsert could not keep a
    model archived or an artifact's state."""
    model = await mr_client.upsert_registered_model(RegisteredModel("stateful", state="archived"))
    assert model.state == "ARCHIVED"
    kept = await mr_client.upsert_registered_model(
        RegisteredModel("stateful", id=model.id, state=None, owner="ana")
    )
    assert (kept.state, kept.owner) == ("ARCHIVED", "ana")
    version = await mr_client.upsert_model_version(ModelVersion("v", state="Archived"), model.id)
    artifact = await mr_client.upsert_model_artifact(
        ModelArtifact("w", uri="s3://b/w", state="live"), version.id
    )
    artifact = await mr_client.upsert_model_artifact(
        ModelArtifact("w", id=artifact.id, state=None, description="d"), version.id
    )
    assert (version.state, artifact.state, artifact.description) == ("ARCHIVED", "LIVE", "d")
    for bad in (
        lambda: mr_client.upsert_registered_model(RegisteredModel("x", state="gone")),
        lambda: mr_client.upsert_model_artifact(ModelArtifact("y", state="gone")),
    ):
        with pytest.raises(InvalidArgumentError) as raised:
            await bad()
        assert raised.value.field_violations[0][0] == "state"


async def test_an_mlflow_version_upserted_by_id_keeps_its_own_name(mr_client, churn) -> None:
    """An MlflowModelVersion made with an id and no version_name asked to rename the
    version to "": INVALID_ARGUMENT "version names cannot change"."""
    version = await mr_client.get_model_version("churn", 1)
    model = await mr_client.get_registered_model("churn")
    described = MlflowModelVersion("churn", id=version.id, description="by id")
    stored = await mr_client.upsert_model_version(described, model.id)
    assert (stored.name, stored.description) == (version.version_name, "by id")


async def test_a_custom_property_holding_no_value_is_refused_naming_it(mr_client) -> None:
    """A Value with none of its fields set was answered OK and dropped: the key asked
    for was never kept, and nothing said so."""
    from cairn.common.v1 import common_pb2
    from cairn.registry.v1 import registry_pb2 as pb
    from cairn.registry.v1 import registry_service_pb2 as api

    model = pb.RegisteredModel(
        project=mr_client.project,
        name="valueless",
        custom_properties={"kept": common_pb2.Value(int_value=1), "empty": common_pb2.Value()},
    )
    request = api.CreateRegisteredModelRequest(registered_model=model)
    with pytest.raises(InvalidArgumentError) as raised:
        await mr_client._transport.unary(mr_client._stub.CreateRegisteredModel, request)
    assert raised.value.field_violations[0][0] == "registered_model.custom_properties['empty']"
    assert await mr_client.get_registered_model_by_params(name="valueless") is None


async def test_an_artifact_upsert_changing_its_name_or_version_is_refused(mr_client) -> None:
    """Both changes passed unsaid: the call answered the artifact as it was."""
    model = await mr_client.upsert_registered_model(RegisteredModel("kept-artifact"))
    first, second = [
        await mr_client.upsert_model_version(ModelVersion(name), model.id) for name in ("1", "2")
    ]
    artifact = await mr_client.upsert_model_artifact(ModelArtifact("weights", uri="u"), first.id)
    artifact.description = "described"
    assert (await mr_client.upsert_model_artifact(artifact, first.id)).description == "described"
    artifact.name = "renamed"
    with pytest.raises(InvalidArgumentError) as renamed:
        await mr_client.upsert_model_artifact(artifact, first.id)
    assert renamed.value.field_violations[0][0] == "artifact.name"
    artifact.name = "weights"
    with pytest.raises(InvalidArgumentError) as moved:
        await mr_client.upsert_model_version_artifact(artifact, second.id)
    assert moved.value.field_violations[0][0] == "artifact.model_version_id"
    stored = await mr_client.get_model_artifact_by_id(artifact.id)
    assert stored is not None
    assert (stored.name, stored.model_version_id) == ("weights", first.id)


async def test_an_artifact_upsert_of_the_other_kind_is_refused_and_writes_nothing(
    mr_client,
) -> None:
    """Each was written: the doc took the model's uri and description (then a bare
    AssertionError), the model lost its format and storage, the model's fields went
    nowhere behind an OK."""
    model = await mr_client.upsert_registered_model(RegisteredModel("kinds"))
    version = await mr_client.upsert_model_version(ModelVersion("1"), model.id)
    doc = await mr_client.upsert_model_version_artifact(
        DocArtifact("readme", uri="s3://b/r", description="kept"), version.id
    )
    weights = await mr_client.upsert_model_artifact(
        ModelArtifact(
            "weights",
            uri="s3://b/w",
            model_format_name="onnx",
            model_format_version="1",
            storage_key="key",
            storage_path="path",
        ),
        version.id,
    )
    before = await mr_client.get_model_version_artifacts(version.id)
    as_model = ModelArtifact(
        "readme", id=doc.id, uri="s3://b/other", description="changed", model_format_name="onnx"
    )
    as_doc = DocArtifact("weights", id=weights.id, uri="s3://b/w")
    attempts = [
        lambda: mr_client.upsert_model_artifact(as_model, version.id),
        lambda: mr_client.upsert_model_version_artifact(as_model, version.id),
        lambda: mr_client.upsert_model_version_artifact(as_doc, version.id),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidArgumentError) as refused:
            await attempt()
        assert refused.value.field_violations[0][0] == "artifact.kind"
    assert await mr_client.get_model_version_artifacts(version.id) == before


async def test_a_version_upsert_moving_it_to_another_model_is_refused(mr_client) -> None:
    """It passed unsaid, the call answering the version as it was."""
    home, other = [
        await mr_client.upsert_registered_model(RegisteredModel(name)) for name in ("home", "away")
    ]
    version = await mr_client.upsert_model_version(ModelVersion("1"), home.id)
    version.description = "described"
    assert (await mr_client.upsert_model_version(version, home.id)).description == "described"
    with pytest.raises(InvalidArgumentError) as moved:
        await mr_client.upsert_model_version(version, other.id)
    assert moved.value.field_violations[0][0] == "model_version.registered_model_id"
    stored = await mr_client.get_model_version_by_id(version.id)
    assert stored is not None and stored.registered_model_id == home.id


async def test_bad_input_and_missing_objects(mr_client, churn) -> None:
    with pytest.raises(AlreadyExistsError) as raised:
        await mr_client.upsert_registered_model(RegisteredModel("churn"))
    assert raised.value.reason == "REGISTERED_MODEL_ALREADY_EXISTS"
    with pytest.raises(AlreadyExistsError) as raised:
        await mr_client.upsert_model_version(ModelVersion("1"), churn.id)
    assert raised.value.reason == "MODEL_VERSION_ALREADY_EXISTS"
    with pytest.raises(NotFoundError) as missing:
        await mr_client.upsert_model_version(ModelVersion("v"), "424242")
    assert missing.value.reason == "REGISTERED_MODEL_NOT_FOUND"
    with pytest.raises(NotFoundError):
        await mr_client.upsert_model_artifact(ModelArtifact("w", uri="u"), "424242")
    with pytest.raises(InvalidArgumentError):
        await mr_client.upsert_registered_model(RegisteredModel(""))
    with pytest.raises(InvalidArgumentError):
        await mr_client.upsert_registered_model(RegisteredModel("bad\nname"))
    assert await mr_client.get_registered_model_by_id("424242") is None
    assert await mr_client.get_model_artifact_by_params(name="nope", model_version_id="1") is None
    # A failed version creation leaves no gap in the numbering.
    assert (await mr_client.create_model_version("churn", "s3://b/4")).version == 4


async def test_delete_artifact_rpc(mr_client, churn) -> None:
    from cairn.registry.v1 import registry_service_pb2 as api

    version = await mr_client.get_model_version("churn", 1)
    artifact = await mr_client.upsert_model_artifact(ModelArtifact("gone", uri="u"), version.id)
    request = api.DeleteArtifactRequest(project=mr_client.project, id=artifact.id)
    await mr_client._transport.unary(mr_client._stub.DeleteArtifact, request)
    assert await mr_client.get_model_artifact_by_id(artifact.id) is None
    with pytest.raises(NotFoundError) as raised:
        await mr_client._transport.unary(mr_client._stub.DeleteArtifact, request)
    assert raised.value.reason == "ARTIFACT_NOT_FOUND"


async def test_create_model_version_takes_mlflows_arguments_and_fields(mr_client) -> None:
    await mr_client.create_registered_model("linked")
    source = f"cairn-artifacts://{mr_client.project}/models/linked"
    created = await mr_client.create_model_version(
        "linked",
        source,
        "run-7",
        {"validated": "yes"},
        "https://tracking.example/runs/run-7",
        "first",
    )
    stored = await mr_client.get_model_version("linked", created.version)
    assert (stored.run_id, stored.source) == ("run-7", source)
    assert (stored.status, stored.current_stage) == ("READY", "None")
    assert stored.run_link == "https://tracking.example/runs/run-7"
    assert (stored.tags, stored.description) == ({"validated": "yes"}, "first")
    with pytest.raises(InvalidArgumentError) as refused:
        await mr_client.create_model_version("linked", "file:///srv/.cairn/artifacts/x")
    assert refused.value.reason == "INVALID_ARTIFACT_LOCATION"


async def test_only_standalone_artifacts_are_versioned(mr_client) -> None:
    from cairn.registry.v1 import registry_pb2 as pb
    from cairn.registry.v1 import registry_service_pb2 as api

    await mr_client.create_registered_model("holder")
    version = await mr_client.create_model_version("holder", "s3://b/holder")
    request = api.CreateArtifactRequest(
        artifact=pb.Artifact(
            project=mr_client.project, model_version_id=version.id, name="a", doc={}
        ),
        new_version=True,
    )
    with pytest.raises(InvalidArgumentError):
        await mr_client._transport.unary(mr_client._stub.CreateArtifact, request)


@pytest.mark.parametrize("version", [2**63, "9" * 5000, "abc", "1.5", 1.5, -1])
async def test_a_version_that_is_no_number_is_invalid_not_a_value_error(
    mr_client: cairn.ModelRegistryAPIClient, version: int | str
) -> None:
    await mr_client.create_registered_model("numbered")
    for call in (
        lambda: mr_client.get_model_version("numbered", version),
        lambda: mr_client.set_registered_model_alias("numbered", "a", version),
    ):
        with pytest.raises(InvalidArgumentError) as raised:
            await call()
        assert raised.value.reason == "INVALID_ARGUMENT"


async def test_versions_order_by_their_models_name_across_pages(
    mr_client: cairn.ModelRegistryAPIClient,
) -> None:
    """MLflow's "name" of a version is its model's; docs/registry.md orders versions
    by the same keys as models."""
    for name in ("b-model", "a-model", "c-model"):
        await mr_client.create_registered_model(name)
        for _ in range(2):
            await mr_client.create_model_version(name, "s3://bucket/m")
    for order, expected in (("name ASC", "aabbcc"), ("name DESC", "ccbbaa")):
        found = await mr_client.search_model_versions(order_by=[order], max_results=3)
        pages = [[v.name[0] for v in found]]
        while found.token:
            found = await mr_client.search_model_versions(
                order_by=[order], max_results=3, page_token=found.token
            )
            pages.append([v.name[0] for v in found])
        assert "".join(name for page in pages for name in page) == expected
        assert len(pages) == 2


async def test_a_version_is_read_as_int_reads_it(mr_client: cairn.ModelRegistryAPIClient) -> None:
    await mr_client.create_registered_model("read-as-int")
    await mr_client.create_model_version("read-as-int", "s3://bucket/m")
    for version in (1, "1", " 1", "01", 1.0):
        assert (await mr_client.get_model_version("read-as-int", version)).version == 1  # type: ignore[arg-type]


async def test_an_alias_to_a_missing_version_names_the_model_as_the_caller_does(
    mr_client: cairn.ModelRegistryAPIClient,
) -> None:
    """The refusal named the model by its row id ("registered model 1"), which no
    caller of set_registered_model_alias(name, ...) ever saw."""
    await mr_client.create_registered_model("churn-named")
    with pytest.raises(NotFoundError) as missing:
        await mr_client.set_registered_model_alias("churn-named", "champion", 99)
    assert missing.value.reason == "MODEL_VERSION_NOT_FOUND"
    assert "'churn-named' has no version 99" in missing.value.message


async def test_a_model_name_no_model_can_have_is_absent(mr_client) -> None:
    """As MLflow's get_registered_model and Kubeflow's get_registered_model_by_params
    answer it; it was INVALID_ARGUMENT."""
    for impossible in (" padded", "x" * 1_000, "a\nb"):
        with pytest.raises(NotFoundError) as absent:
            await mr_client.get_registered_model(impossible)
        assert absent.value.reason == "REGISTERED_MODEL_NOT_FOUND"
        assert await mr_client.get_registered_model_by_params(name=impossible) is None
    with pytest.raises(InvalidArgumentError):  # no name at all, which MLflow refuses too
        await mr_client.get_registered_model("")


async def test_an_external_id_or_artifact_name_nothing_can_have_finds_nothing(mr_client) -> None:
    """Kubeflow's *_by_params answer None for what no object has; a value past the
    bounds of what can be stored was INVALID_ARGUMENT, so a caller looking up an id of
    another system's had to catch both."""
    model = await mr_client.upsert_registered_model(RegisteredModel("by-params"))
    version = await mr_client.upsert_model_version(ModelVersion("v1"), model.id)
    for impossible in (" padded", "x" * 1_000, "a\nb"):
        assert await mr_client.get_registered_model_by_params(external_id=impossible) is None
        assert await mr_client.get_model_version_by_params(external_id=impossible) is None
        assert await mr_client.get_model_artifact_by_params(external_id=impossible) is None
        assert await mr_client.get_model_artifact_by_params(impossible, version.id) is None


async def test_a_version_made_as_its_model_is_renamed_is_named_by_the_models_new_name(
    mr_client: cairn.ModelRegistryAPIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name in create_model_version's answer was the caller's, not the model's: a
    rename landing between the client's lookup of the name and the version's creation
    gave a version named "old" of the model now "new", and models:/old/1 built from it
    found whichever model took "old" next."""
    await mr_client.create_registered_model("old")
    create = mr_client.upsert_model_version

    async def renamed_first(*args, **kwargs):  # as a concurrent caller would, at that moment
        await mr_client.rename_registered_model("old", "new")
        return await create(*args, **kwargs)

    monkeypatch.setattr(mr_client, "upsert_model_version", renamed_first)
    made = await mr_client.create_model_version("old", "s3://bucket/model")
    assert (made.name, made.registered_model_name) == ("new", "new")
    assert made == await mr_client.get_model_version("new", str(made.version))


async def test_writes_by_name_repeated_under_their_request_id_get_the_first_answer(
    mr_client: cairn.ModelRegistryAPIClient,
) -> None:
    """A job run again after it lost an answer: the client looked the name up before
    the write, so the repeat of a delete or rename was NOT_FOUND, and a rename repeated
    once another model took the old name was REQUEST_ID_REUSED."""

    def job(step: str) -> list[tuple[str, str]]:
        return [("x-cairn-request-id", f"job-7-{step}")]

    await mr_client.create_registered_model("m")
    for source in ("s3://b/1", "s3://b/2"):
        await mr_client.create_model_version("m", source)
    for _ in range(2):
        await mr_client.delete_model_version("m", 2, metadata=job("delete-version"))
    renamed = [
        await mr_client.rename_registered_model("m", "m2", metadata=job("rename")) for _ in range(2)
    ]
    assert renamed[0] == renamed[1] and renamed[0].name == "m2"
    other = await mr_client.create_registered_model("m")  # another takes the old name
    assert await mr_client.rename_registered_model("m", "m2", metadata=job("rename")) == renamed[0]
    assert [v.version for v in await mr_client.get_model_versions(str(renamed[0].id))] == [1]
    for _ in range(2):
        await mr_client.delete_registered_model("m2", metadata=job("delete-model"))
    with pytest.raises(NotFoundError):
        await mr_client.get_registered_model("m2")
    assert (await mr_client.get_registered_model("m")).id == other.id


async def test_a_descriptions_update_repeated_under_its_request_id_after_other_writes_is_one(
    mr_client: cairn.ModelRegistryAPIClient, churn: RegisteredModel
) -> None:
    """The client sent the whole version as it read it, with the new description: once
    another writer changed a tag or the stage, the job's repeat was another request
    (REQUEST_ID_REUSED)."""
    job = [("x-cairn-request-id", "job-8-describe")]
    first = await mr_client.update_model_version("churn", 1, "retrained", metadata=job)
    await mr_client.set_model_version_tag("churn", 1, "ci", "passed")
    await mr_client.transition_model_version_stage("churn", 1, "Staging")

    again = await mr_client.update_model_version("churn", 1, "retrained", metadata=job)

    assert again == first
    found = await mr_client.get_model_version("churn", 1)
    assert (found.description, found.tags["ci"], found.current_stage) == (
        "retrained",
        "passed",
        "Staging",
    )


async def test_an_id_of_none_is_no_id(mr_client: cairn.ModelRegistryAPIClient) -> None:
    """None was sent as the text "None": a lookup by it answered None (nothing has that
    id), a version's creation NOT_FOUND "registered model None", and the artifacts of
    version None were every artifact of the project."""
    model = await mr_client.upsert_registered_model(RegisteredModel("ids"))
    version = await mr_client.upsert_model_version(ModelVersion("v1"), str(model.id))
    await mr_client.upsert_model_artifact(ModelArtifact("a", uri="s3://b/a"), version.id)
    for call in (
        mr_client.get_registered_model_by_id(None),  # type: ignore[arg-type]
        mr_client.get_model_version_by_id(None),  # type: ignore[arg-type]
        mr_client.get_model_artifact_by_id(None),  # type: ignore[arg-type]
        mr_client.upsert_model_version(ModelVersion("v2"), None),  # type: ignore[arg-type]
        mr_client.get_model_version_artifacts(None),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidArgumentError):
            await call
    version.description = "kept to its model"
    updated = await mr_client.upsert_model_version(version, None)  # type: ignore[arg-type]
    assert (updated.description, updated.registered_model_id) == (version.description, model.id)


async def test_a_write_naming_no_model_says_what_to_give(
    mr_client: cairn.ModelRegistryAPIClient,
) -> None:
    for call, field in (
        (mr_client.delete_registered_model(""), "name"),
        (mr_client.rename_registered_model("", "new"), "name"),
        (mr_client.delete_model_version("", 1), "registered_model_name"),
    ):
        with pytest.raises(InvalidArgumentError) as refused:
            await call
        assert refused.value.field_violations[0][0] == field
