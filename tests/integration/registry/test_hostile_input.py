"""Input a client may send on purpose or by accident: each answer is a clear error with
a stable reason (or the object asked for), never INTERNAL and never another row."""

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from cairn.common.v1 import common_pb2
from cairn.registry.v1 import registry_pb2 as pb
from cairn.registry.v1 import registry_service_pb2 as api
from cairn.registry.v1 import registry_service_pb2_grpc as rpc
from cairn_server.common import paging
from cairn_server.common.config import Config
from cairn_server.registry import validation
from tests.conftest import eventually, new_project, serving

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
async def stub(server_port: int) -> AsyncIterator[rpc.RegistryServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server_port}") as channel:
        yield rpc.RegistryServiceStub(channel)


async def _refusal(call) -> tuple[grpc.StatusCode, str]:
    """The status code and ErrorInfo reason a call fails with."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return _code_and_reason(raised.value)


def _code_and_reason(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    status = rpc_status.from_call(error)
    assert status is not None, error.details()
    info = error_details_pb2.ErrorInfo()
    next(d for d in status.details if d.Unpack(info))
    return error.code(), info.reason


async def _create_model(stub, project: str, name: str, **fields) -> pb.RegisteredModel:
    model = pb.RegisteredModel(project=project, name=name, **fields)
    request = api.CreateRegisteredModelRequest(registered_model=model)
    return (await stub.CreateRegisteredModel(request)).registered_model


async def test_ids_in_other_digits_name_no_model(stub, server_port, unique) -> None:
    """Only ASCII digits spell an id: "²" and "①" are digits to str.isdigit() but not to
    int(), and Arabic-Indic digits are to both, so they used to be INTERNAL or reach the
    model of the ASCII number."""
    project = await new_project(server_port, f"ids-{unique}")
    model_id = (await _create_model(stub, project, "m")).id
    arabic_indic = "".join(chr(0x0660 + int(d)) for d in model_id)
    for spelling in ("\u00b2", "\u2460", arabic_indic, f"0{model_id}"):
        request = api.GetRegisteredModelRequest(project=project, id=spelling)
        refused = await _refusal(stub.GetRegisteredModel(request))
        assert refused == (grpc.StatusCode.NOT_FOUND, "REGISTERED_MODEL_NOT_FOUND"), spelling
    got = await stub.GetRegisteredModel(api.GetRegisteredModelRequest(project=project, id=model_id))
    assert got.registered_model.name == "m"


async def test_repeated_inputs_are_counted_before_they_are_read(stub, server_port, unique) -> None:
    """Each list or map a request carries has a cap, checked by its length alone, one
    past which is refused; repeats of a stage count (they are read once when within)."""
    project = await new_project(server_port, f"caps-{unique}")
    model = await _create_model(stub, project, "m")
    latest = api.GetLatestModelVersionsRequest(project=project, registered_model_id=model.id)
    latest.stages.extend([pb.STAGE_PRODUCTION] * 16)
    assert (await stub.GetLatestModelVersions(latest)).model_versions == []
    latest.stages.append(pb.STAGE_STAGING)
    assert await _refusal(stub.GetLatestModelVersions(latest)) == (INVALID, "INVALID_ARGUMENT")

    update = api.UpdateRegisteredModelRequest(
        registered_model=pb.RegisteredModel(project=project, id=model.id, description="d"),
        update_mask=field_mask_pb2.FieldMask(paths=["description"] * 6),
    )
    assert (await stub.UpdateRegisteredModel(update)).registered_model.description == "d"
    update.update_mask.paths.append("description")
    assert await _refusal(stub.UpdateRegisteredModel(update)) == (INVALID, "INVALID_ARGUMENT")

    tags = {f"t{n}": "" for n in range(256)}
    assert len((await _create_model(stub, project, "tagged", tags=tags)).tags) == 256
    tags["one-more"] = ""
    refused = await _refusal(_create_model(stub, project, "over", tags=tags))
    assert refused == (INVALID, "INVALID_ARGUMENT")
    properties = {f"p{n}": common_pb2.Value(int_value=n) for n in range(257)}
    refused = await _refusal(_create_model(stub, project, "over", custom_properties=properties))
    assert refused == (INVALID, "INVALID_ARGUMENT")


async def test_output_only_fields_of_a_request_are_ignored(stub, server_port, unique) -> None:
    """A registered model's aliases and latest_versions (a version's aliases too) are
    the server's to fill in: what a request puts there is not read (AIP-203)."""
    project = await new_project(server_port, f"out-{unique}")
    model = await _create_model(
        stub, project, "m", aliases={"champion": 7}, latest_versions=[pb.ModelVersion(name="x")]
    )
    assert not model.aliases and not model.latest_versions
    version = pb.ModelVersion(project=project, registered_model_id=model.id, aliases=["a"])
    made = await stub.CreateModelVersion(api.CreateModelVersionRequest(model_version=version))
    assert list(made.model_version.aliases) == []


async def _waits_for_a_lock(pool: asyncpg.Pool) -> bool:
    waiting = await pool.fetchval(
        """SELECT count(*) FROM pg_stat_activity
           WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE registry.registered_models t%'"""
    )
    return bool(waiting)


def _filler(count: int, prefix: str = "p") -> dict[str, common_pb2.Value]:
    """count properties of 8,000 characters: 8,000 bytes each, besides their keys."""
    return {f"{prefix}{n:03}": common_pb2.Value(string_value="x" * 8000) for n in range(count)}


async def test_tags_stop_at_their_limits_even_when_set_at_once(
    stub, server_port, pool, unique
) -> None:
    """SetRegisteredModelTag used to add tags without end, until the model could no
    longer be sent; now a tag past 256, or past 1 MiB of properties and tags together,
    is refused, checked by the UPDATE itself so that concurrent sets cannot both pass."""
    project = await new_project(server_port, f"tags-{unique}")
    model = await _create_model(stub, project, "m", tags={f"t{n}": "" for n in range(255)})

    def set_tag(key: str, value: str = ""):
        return stub.SetRegisteredModelTag(
            api.SetRegisteredModelTagRequest(
                project=project, registered_model_id=model.id, key=key, value=value
            )
        )

    # A set waiting for the row while another transaction adds the 256th tag is
    # refused once that commits: its UPDATE tests the limit on the row it finally gets.
    async with pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute(
                """UPDATE registry.registered_models SET tags = tags || '{"a": ""}'
                   WHERE id = $1""",
                int(model.id),
            )
            waiting = asyncio.ensure_future(_refusal(set_tag("b")))
            await eventually(lambda: _waits_for_a_lock(pool), what="the set to wait")
        assert await waiting == (INVALID, "INVALID_ARGUMENT")
    await set_tag("t0", "a new value")  # a key it has is no new tag
    assert await _refusal(set_tag("c")) == (INVALID, "INVALID_ARGUMENT")

    # 131 properties of 8,000 bytes and their keys are 1,048,524 bytes, 52 short of 1 MiB.
    sized = await _create_model(stub, project, "sized", custom_properties=_filler(131))
    one = api.SetRegisteredModelTagRequest(project=project, registered_model_id=sized.id, key="k")
    await stub.SetRegisteredModelTag(one)
    one.value = "x" * 52  # 53 bytes with its key, one too many
    assert await _refusal(stub.SetRegisteredModelTag(one)) == (INVALID, "INVALID_ARGUMENT")
    one.value = "x" * 51
    await stub.SetRegisteredModelTag(one)
    refused = await _refusal(_create_model(stub, project, "over", custom_properties=_filler(132)))
    assert refused == (INVALID, "INVALID_ARGUMENT")
    update = api.UpdateRegisteredModelRequest(
        registered_model=pb.RegisteredModel(
            project=project, id=sized.id, custom_properties=_filler(130, "q")
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["custom_properties"]),
    )
    await stub.UpdateRegisteredModel(update)
    # With the tag's 52 bytes, 130 properties as before and one of a 5-byte key: 1 MiB + 1.
    update.registered_model.custom_properties["r0000"].string_value = "x" * 8000
    assert await _refusal(stub.UpdateRegisteredModel(update)) == (INVALID, "INVALID_ARGUMENT")


@pytest.fixture
async def small_messages(config: Config, pool: asyncpg.Pool) -> AsyncIterator[int]:
    """A registry whose largest message is the least it is served with (about 6.2 MiB)."""
    least = validation.LEAST_MESSAGE_BYTES
    async with serving(config, pool, ["registry"], max_message_bytes=least) as port:
        yield port


async def test_a_page_too_large_to_send_is_cut_and_continued(
    small_messages, server_port, unique
) -> None:
    """Seven models of 1 MiB do not fit in one response of the least messages: the page
    ends after six (it used to fail whole, RESOURCE_EXHAUSTED) and its token continues
    with the seventh."""
    project = await new_project(server_port, f"page-{unique}")
    options = [("grpc.max_receive_message_length", -1)]  # gRPC's default is 4 MiB
    async with grpc.aio.insecure_channel(f"127.0.0.1:{small_messages}", options) as channel:
        small = rpc.RegistryServiceStub(channel)
        names = [
            (await _create_model(small, project, f"m{n}", custom_properties=_filler(131))).name
            for n in range(7)
        ]
        request = api.ListRegisteredModelsRequest(project=project, page_size=7)
        first = await small.ListRegisteredModels(request)
        request.page_token = first.next_page_token
        second = await small.ListRegisteredModels(request)
    assert [m.name for m in first.registered_models] == names[:6] and first.next_page_token
    assert [m.name for m in second.registered_models] == names[6:]
    assert not second.next_page_token


async def _pages_of_models(stub, project: str) -> list[list[str]]:
    """The names of the project's models, page by page of 1,000 asked for."""
    request = api.ListRegisteredModelsRequest(project=project, page_size=1000)
    return await _pages(stub.ListRegisteredModels, request, lambda r: r.registered_models, "name")


async def _pages(list_call, request, items, field: str) -> list[list[str]]:
    """The field of each item of a listing, page by page, following its tokens."""
    pages = []
    while True:
        reply = await list_call(request)
        pages.append([getattr(item, field) for item in items(reply)])
        request.page_token = reply.next_page_token
        if not request.page_token:
            return pages


async def test_a_page_loads_only_the_objects_its_budget_holds(
    stub, server_port, unique, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of 1,000 objects of 1 MiB loaded a GiB before it was cut to a message: a
    page loads the objects whose properties and tags fit its budget together, and its
    token continues after them. The budget here holds two models of about 80 kB."""
    monkeypatch.setattr(paging, "MAX_PAGE_LOAD_BYTES", 200_000)
    project = await new_project(server_port, f"loads-{unique}")
    names = [
        (await _create_model(stub, project, f"m{n}", custom_properties=_filler(10))).name
        for n in range(5)
    ]
    assert await _pages_of_models(stub, project) == [names[0:2], names[2:4], names[4:]]


async def test_a_page_of_models_counts_their_latest_versions(
    stub, server_port, unique, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model comes with its latest version of each stage: small models with large
    versions fill the budget too (two models and their versions of about 80 kB here)."""
    monkeypatch.setattr(paging, "MAX_PAGE_LOAD_BYTES", 200_000)
    project = await new_project(server_port, f"latest-{unique}")
    names = []
    for n in range(5):
        model = await _create_model(stub, project, f"m{n}")
        version = pb.ModelVersion(
            project=project, registered_model_id=model.id, custom_properties=_filler(10)
        )
        await stub.CreateModelVersion(api.CreateModelVersionRequest(model_version=version))
        names.append(model.name)
    assert await _pages_of_models(stub, project) == [names[0:2], names[2:4], names[4:]]


async def _version_of(stub, model: pb.RegisteredModel) -> pb.ModelVersion:
    version = pb.ModelVersion(project=model.project, registered_model_id=model.id)
    request = api.CreateModelVersionRequest(model_version=version)
    return (await stub.CreateModelVersion(request)).model_version


async def _aliases(stub, model: pb.RegisteredModel, version: int, names: list[str]) -> None:
    """Points each of names at the version, a few at once."""
    for start in range(0, len(names), 16):
        some = names[start : start + 16]
        await asyncio.gather(
            *(stub.SetRegisteredModelAlias(_alias(model, version, n)) for n in some)
        )


def _alias(model: pb.RegisteredModel, version: int, name: str) -> object:
    return api.SetRegisteredModelAliasRequest(
        project=model.project, registered_model_id=model.id, alias=name, version=version
    )


def _long_aliases(count: int, prefix: str) -> list[str]:
    """count aliases of 255 characters, the longest an alias may be."""
    return [f"{prefix}{n:04}".ljust(255, "x") for n in range(count)]


async def test_a_model_has_at_most_256_aliases(stub, server_port, unique) -> None:
    """Every answer of a model carries all its aliases (and its latest versions theirs):
    without a bound, 5,000 made it unreadable on a 1 MiB server, and 33,000 at 16 MiB.
    At the bound a new alias is refused, moving one is not, and a delete frees room;
    two new aliases set at once for the last place are not both taken."""
    project = await new_project(server_port, f"aliases-{unique}")
    model = await _create_model(stub, project, "m")
    first, second = [(await _version_of(stub, model)).version for _ in range(2)]
    await _aliases(stub, model, first, _long_aliases(255, "a"))
    racing = [_alias(model, first, name) for name in ("last-a", "last-b")]
    outcomes = await asyncio.gather(
        *(stub.SetRegisteredModelAlias(r) for r in racing), return_exceptions=True
    )
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(refused) == 1
    assert _code_and_reason(refused[0]) == (INVALID, "TOO_MANY_ALIASES")
    assert await _refusal(stub.SetRegisteredModelAlias(_alias(model, first, "one-more"))) == (
        INVALID,
        "TOO_MANY_ALIASES",
    )
    moved = _long_aliases(1, "a")[0]
    await stub.SetRegisteredModelAlias(_alias(model, second, moved))
    request = api.DeleteRegisteredModelAliasRequest(
        project=project, registered_model_id=model.id, alias=moved
    )
    await stub.DeleteRegisteredModelAlias(request)
    await stub.SetRegisteredModelAlias(_alias(model, first, "one-more"))
    got = await stub.GetRegisteredModel(api.GetRegisteredModelRequest(project=project, id=model.id))
    assert len(got.registered_model.aliases) == 256


async def test_pages_count_their_objects_aliases(
    stub, server_port, unique, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model comes with its aliases twice (its own, its latest versions'), a version
    with its own: 40 aliases of 255 characters are 20 kB a model and 10 kB a version,
    so that budgets of 50 and 25 kB hold two of them."""
    project = await new_project(server_port, f"alias-pages-{unique}")
    models, versions = [], []
    for n in range(5):
        model = await _create_model(stub, project, f"m{n}")
        version = await _version_of(stub, model)
        await _aliases(stub, model, version.version, _long_aliases(40, "a"))
        models.append(model.name)
    monkeypatch.setattr(paging, "MAX_PAGE_LOAD_BYTES", 50_000)
    assert await _pages_of_models(stub, project) == [models[0:2], models[2:4], models[4:]]
    model = await _create_model(stub, project, "versions")
    for n in range(5):
        version = await _version_of(stub, model)
        await _aliases(stub, model, version.version, _long_aliases(40, f"v{n}"))
        versions.append(version.id)
    monkeypatch.setattr(paging, "MAX_PAGE_LOAD_BYTES", 25_000)
    request = api.ListModelVersionsRequest(
        project=project, registered_model_id=model.id, page_size=1000
    )
    pages = await _pages(stub.ListModelVersions, request, lambda r: r.model_versions, "id")
    assert pages == [versions[0:2], versions[2:4], versions[4:]]


async def test_a_version_named_like_a_later_number_blocks_no_version(
    stub, server_port, unique
) -> None:
    """An unnamed version is named by its number when that name is free; Kubeflow's own
    example names version 1 "9000". A version 1 named "2" made every later unnamed
    version clash (ALREADY_EXISTS) for good; version 2 is now named "2-2" (or "2-3"...)."""
    project = await new_project(server_port, f"names-{unique}")
    model = await _create_model(stub, project, "m")

    async def create(name: str = "") -> pb.ModelVersion:
        version = pb.ModelVersion(project=project, registered_model_id=model.id, name=name)
        request = api.CreateModelVersionRequest(model_version=version)
        return (await stub.CreateModelVersion(request)).model_version

    assert [(await create(name)).version for name in ("3", "3-2")] == [1, 2]
    made = [await create(), await create(), await create("6"), await create()]
    assert [(v.version, v.name) for v in made] == [(3, "3-3"), (4, "4"), (5, "6"), (6, "6-2")]
    refused = await _refusal(create("4"))
    assert refused == (grpc.StatusCode.ALREADY_EXISTS, "MODEL_VERSION_ALREADY_EXISTS")


async def test_a_model_stored_before_the_tag_limit_takes_updates(
    stub, server_port, pool: asyncpg.Pool, unique
) -> None:
    """Tags are set at creation and by SetTag only: a model read back with more tags than
    the limit allows today (stored before it) is sent back with a change and updated."""
    project = await new_project(server_port, f"legacy-{unique}")
    model = await _create_model(stub, project, "m")
    many = {f"t{i}": "x" for i in range(300)}
    await pool.execute(
        "UPDATE registry.registered_models SET tags = $2::text::jsonb WHERE id = $1",
        int(model.id),
        json.dumps(many),
    )
    read = await stub.GetRegisteredModel(
        api.GetRegisteredModelRequest(project=project, id=model.id)
    )
    assert len(read.registered_model.tags) == 300
    read.registered_model.description = "kept its tags"
    request = api.UpdateRegisteredModelRequest(
        registered_model=read.registered_model,
        update_mask=field_mask_pb2.FieldMask(paths=["description"]),
    )
    updated = (await stub.UpdateRegisteredModel(request)).registered_model
    assert updated.description == "kept its tags" and dict(updated.tags) == many


async def test_no_version_or_artifact_points_at_another_projects_files(
    stub, server_port, unique
) -> None:
    """A writer of this project could name another project's directory, which it may not
    even read, and its readers who belong to both would be sent there under this
    project's name: every URI the registry stores is checked, made or changed."""
    project = await new_project(server_port, f"own-{unique}")
    own, foreign = f"cairn-artifacts://{project}/m", f"cairn-artifacts://other-{unique}/m"
    model_id = (await _create_model(stub, project, "m")).id

    def version(uri: str, **fields) -> pb.ModelVersion:
        return pb.ModelVersion(
            project=project, registered_model_id=model_id, source_uri=uri, **fields
        )

    def artifact(uri: str, version_id: str, **fields) -> pb.Artifact:
        message = pb.Artifact(project=project, name="weights", model_version_id=version_id)
        message.uri, message.model.model_format_name = uri, "onnx"
        message.MergeFrom(pb.Artifact(**fields))
        return message

    version_id = (
        await stub.CreateModelVersion(api.CreateModelVersionRequest(model_version=version(own)))
    ).model_version.id
    artifact_id = (
        await stub.CreateArtifact(api.CreateArtifactRequest(artifact=artifact(own, version_id)))
    ).artifact.id
    calls = [
        stub.CreateModelVersion(api.CreateModelVersionRequest(model_version=version(foreign))),
        stub.UpdateModelVersion(
            api.UpdateModelVersionRequest(
                model_version=version(foreign, id=version_id),
                update_mask=field_mask_pb2.FieldMask(paths=["source_uri"]),
            )
        ),
        stub.CreateArtifact(
            api.CreateArtifactRequest(artifact=artifact(f"{foreign}/w.onnx", version_id))
        ),
        stub.UpdateArtifact(
            api.UpdateArtifactRequest(
                artifact=artifact(f"{foreign}/w.onnx", version_id, id=artifact_id),
                update_mask=field_mask_pb2.FieldMask(paths=["uri"]),
            )
        ),
    ]
    for call in calls:
        assert await _refusal(call) == (INVALID, "INVALID_ARTIFACT_LOCATION")
    uri = await stub.GetModelVersionDownloadUri(
        api.GetModelVersionDownloadUriRequest(project=project, id=version_id)
    )
    assert uri.uri.startswith(own)


@pytest.mark.parametrize(
    "source",
    [
        "runs:/{run}/../../x",
        "runs:/{run}/a//b",
        "runs:/{run}//x",
        "RUNS:/{run}/./x",
        "cairn-artifacts://{project}/../etc",
        "cairn-artifacts://{project}/a//b",
        "cairn-artifacts://{project}?x/m",  # read as the project "<project>?x"
        "cairn-artifacts://{project}#x",
        "models:/m1/../1",
        "models:/m1",
        "models:/m1@",
        "models:/m1@-bad",
    ],
)
async def test_a_source_no_client_can_resolve_is_refused(
    stub, server_port, unique, source: str
) -> None:
    """Such a source was stored, and every download of the version failed later in the
    client ("'.' and '..' are not allowed in a path"); the artifact service refuses
    empty segments too. An artifact's URI is checked alike."""
    project = await new_project(server_port, f"paths-{unique}")
    model_id = (await _create_model(stub, project, "m")).id
    uri = source.format(run="0123abcd", project=project)
    version = pb.ModelVersion(project=project, registered_model_id=model_id, source_uri=uri)
    created = stub.CreateModelVersion(api.CreateModelVersionRequest(model_version=version))
    assert await _refusal(created) == (INVALID, "INVALID_ARTIFACT_LOCATION")
    artifact = pb.Artifact(project=project, name="weights", uri=uri)
    artifact.model.model_format_name = "onnx"
    made = stub.CreateArtifact(api.CreateArtifactRequest(artifact=artifact))
    assert await _refusal(made) == (INVALID, "INVALID_ARTIFACT_LOCATION")


async def test_sources_of_every_resolvable_form_are_kept(stub, server_port, unique) -> None:
    project = await new_project(server_port, f"forms-{unique}")
    model_id = (await _create_model(stub, project, "m")).id
    for uri in [
        "runs:/0123abcd",
        "runs:/0123abcd/model/",
        f"cairn-artifacts://{project}/a/b.onnx",
        "models:/a/b/1",  # the model named "a/b"
        "models:/m/Production",
        "models:/m@champion",
        "s3://bucket/../x",  # another store's: its own rules
    ]:
        version = pb.ModelVersion(project=project, registered_model_id=model_id, source_uri=uri)
        made = await stub.CreateModelVersion(api.CreateModelVersionRequest(model_version=version))
        assert made.model_version.source_uri == uri


async def test_a_uri_stored_before_the_check_may_be_sent_back_unchanged(
    stub, server_port, unique, pool: asyncpg.Pool
) -> None:
    """Kubeflow's upserts send every field back, the URI too: a version stored with
    another project's URI (before the registry refused one) takes a new description,
    and may not move to a third project's."""
    project = await new_project(server_port, f"legacy-{unique}")
    model_id = (await _create_model(stub, project, "m")).id
    own, legacy = f"cairn-artifacts://{project}/m", f"cairn-artifacts://older-{unique}/m"
    created = await stub.CreateModelVersion(
        api.CreateModelVersionRequest(
            model_version=pb.ModelVersion(
                project=project, registered_model_id=model_id, source_uri=own
            )
        )
    )
    version_id = created.model_version.id
    await pool.execute(
        "UPDATE registry.model_versions SET source_uri = $2 WHERE id = $1",
        int(version_id),
        legacy,
    )

    def upsert(uri: str) -> Awaitable[Any]:
        version = pb.ModelVersion(
            project=project, id=version_id, source_uri=uri, description="described"
        )
        mask = field_mask_pb2.FieldMask(paths=["description", "source_uri"])
        return stub.UpdateModelVersion(
            api.UpdateModelVersionRequest(model_version=version, update_mask=mask)
        )

    assert (await upsert(legacy)).model_version.description == "described"
    moved = upsert(f"cairn-artifacts://third-{unique}/m")
    assert await _refusal(moved) == (INVALID, "INVALID_ARTIFACT_LOCATION")


async def test_a_file_uri_stored_before_the_check_may_be_sent_back_unchanged(
    stub, server_port, unique, pool: asyncpg.Pool
) -> None:
    """A version and an artifact stored with a file: URI (before the registry refused
    one), read back and sent whole with a new description, the URI named in the mask
    (Kubeflow's upserts) or not (MLflow's update_model_version), were refused
    INVALID_ARTIFACT_LOCATION for the URI they did not change. They are updated; a change
    to another file: URI is still refused."""
    project = await new_project(server_port, f"file-{unique}")
    model_id = (await _create_model(stub, project, "m")).id
    own, legacy = f"cairn-artifacts://{project}/m", "file:///srv/models/m"
    version = pb.ModelVersion(project=project, registered_model_id=model_id, source_uri=own)
    version_id = (
        await stub.CreateModelVersion(api.CreateModelVersionRequest(model_version=version))
    ).model_version.id
    artifact = pb.Artifact(project=project, name="w", model_version_id=version_id, uri=own)
    artifact.model.model_format_name = "onnx"
    artifact_id = (
        await stub.CreateArtifact(api.CreateArtifactRequest(artifact=artifact))
    ).artifact.id
    await pool.execute(
        "UPDATE registry.model_versions SET source_uri = $2 WHERE id = $1", int(version_id), legacy
    )
    await pool.execute(
        "UPDATE registry.artifacts SET uri = $2 WHERE id = $1", int(artifact_id), legacy
    )

    for paths in (["description"], ["description", "source_uri"]):
        read = await stub.GetModelVersion(
            api.GetModelVersionRequest(project=project, id=version_id)
        )
        read.model_version.description = f"described {len(paths)}"
        updated = await stub.UpdateModelVersion(
            api.UpdateModelVersionRequest(
                model_version=read.model_version, update_mask=field_mask_pb2.FieldMask(paths=paths)
            )
        )
        assert updated.model_version.description == f"described {len(paths)}"
        assert updated.model_version.source_uri == legacy
    for paths in (["description"], ["description", "uri", "model.model_format_name"]):
        read_artifact = await stub.GetArtifact(
            api.GetArtifactRequest(project=project, id=artifact_id)
        )
        read_artifact.artifact.description = f"described {len(paths)}"
        changed = await stub.UpdateArtifact(
            api.UpdateArtifactRequest(
                artifact=read_artifact.artifact, update_mask=field_mask_pb2.FieldMask(paths=paths)
            )
        )
        assert changed.artifact.description == f"described {len(paths)}"
        assert changed.artifact.uri == legacy and changed.artifact.model.model_format_name == "onnx"

    # Stored so, in any spelling URL parsers read as file:, they are passed over.
    for spelled in (legacy, " file:m.onnx", "fi\tle:m.onnx"):
        for table, column, row in (
            ("model_versions", "source_uri", version_id),
            ("artifacts", "uri", artifact_id),
        ):
            await pool.execute(
                f"UPDATE registry.{table} SET {column} = $2 WHERE id = $1", int(row), spelled
            )
        download = await stub.GetModelVersionDownloadUri(
            api.GetModelVersionDownloadUriRequest(project=project, id=version_id)
        )
        assert download.uri == ""

    moved = pb.ModelVersion(project=project, id=version_id, source_uri="file:///srv/other")
    refused = stub.UpdateModelVersion(
        api.UpdateModelVersionRequest(
            model_version=moved, update_mask=field_mask_pb2.FieldMask(paths=["source_uri"])
        )
    )
    assert await _refusal(refused) == (INVALID, "INVALID_ARTIFACT_LOCATION")


async def test_a_model_stored_before_the_property_limit_takes_a_new_description(
    stub, server_port, unique, pool: asyncpg.Pool
) -> None:
    """Its properties, sent back as read but not named by the mask, were counted against
    today's limit and the update refused."""
    project = await new_project(server_port, f"props-{unique}")
    model = await _create_model(stub, project, "m")
    many = {f"p{i}": {"string_value": "x"} for i in range(300)}
    await pool.execute(
        "UPDATE registry.registered_models SET custom_properties = $2::text::jsonb WHERE id = $1",
        int(model.id),
        json.dumps(many),
    )
    read = await stub.GetRegisteredModel(
        api.GetRegisteredModelRequest(project=project, id=model.id)
    )
    assert len(read.registered_model.custom_properties) == 300
    read.registered_model.description = "kept its properties"
    updated = await stub.UpdateRegisteredModel(
        api.UpdateRegisteredModelRequest(
            registered_model=read.registered_model,
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        )
    )
    assert updated.registered_model.description == "kept its properties"
    assert len(updated.registered_model.custom_properties) == 300


async def test_a_write_given_a_model_by_id_and_by_name_is_refused(
    stub: rpc.RegistryServiceStub, server_port: int, unique: str
) -> None:
    """It acted on the id and passed over the name, which could name another model."""
    project = await new_project(server_port, f"both-{unique}")
    made = [
        (await stub.CreateRegisteredModel(request)).registered_model
        for request in (
            api.CreateRegisteredModelRequest(
                registered_model=pb.RegisteredModel(project=project, name=n)
            )
            for n in ("m", "other")
        )
    ]
    version = pb.ModelVersion(
        project=project, registered_model_id=made[0].id, source_uri="s3://b/m"
    )
    created = await stub.CreateModelVersion(api.CreateModelVersionRequest(model_version=version))
    for call in (
        stub.RenameRegisteredModel(
            api.RenameRegisteredModelRequest(
                project=project, id=made[0].id, name="other", new_name="n"
            )
        ),
        stub.DeleteRegisteredModel(
            api.DeleteRegisteredModelRequest(project=project, id=made[0].id, name="other")
        ),
        stub.DeleteModelVersion(
            api.DeleteModelVersionRequest(
                project=project,
                id=created.model_version.id,
                registered_model_name="other",
                version=1,
            )
        ),
    ):
        assert await _refusal(call) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    names = await stub.ListRegisteredModels(api.ListRegisteredModelsRequest(project=project))
    assert sorted(m.name for m in names.registered_models) == ["m", "other"]


async def test_an_update_with_an_empty_mask_changes_nothing(stub, server_port, unique) -> None:
    """An empty update_mask names no field to change (docs/registry.md): the fields the
    request sets are not read as an implied mask, and the answer is the model as stored."""
    project = await new_project(server_port, f"mask-{unique}")
    model = await _create_model(stub, project, "m", description="before")
    sent = pb.RegisteredModel(
        project=project, id=model.id, description="after", state=pb.STATE_ARCHIVED
    )
    answer = await stub.UpdateRegisteredModel(
        api.UpdateRegisteredModelRequest(registered_model=sent)
    )
    got = await stub.GetRegisteredModel(api.GetRegisteredModelRequest(project=project, id=model.id))
    assert answer.registered_model == got.registered_model == model
