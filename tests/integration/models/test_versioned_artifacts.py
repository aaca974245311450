"""ML Aide's versioned artifacts through the real services: gapless numbers (also under
concurrent creates), type and metadata, the latest or an asked version, download and load,
and ML Aide's sequence: a run with used artifacts, a model logged, a version, loaded back."""

from __future__ import annotations

import asyncio
import functools
import io
import os
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from cairn._clients import versioned_artifacts
from cairn._clients.versioned_artifacts import _segment
from cairn.exceptions import AlreadyExistsError, InvalidArgumentError, NotFoundError
from cairn.models import parse_uri
from cairn.registry.v1 import registry_pb2 as pb
from cairn.registry.v1 import registry_service_pb2 as api
from cairn.types import ModelArtifact, VersionedArtifact
from tests.integration.models.conftest import World

# Sent in many chunks: a cancel made as one is reported lands before the last.
SECOND_FILE_BYTES = 32 * 1024 * 1024


async def test_each_create_is_the_next_version_with_type_and_metadata(
    world: World, tmp_path: Path
) -> None:
    data = tmp_path / "iris.csv"
    data.write_text("a,b\n1,2\n")
    first = await world.registry.create_artifact(
        "iris", "dataset", {"rows": 1}, files=data, run_id=world.run_id
    )
    second = await world.registry.create_artifact(
        "iris", "dataset", {"rows": 2}, files=b"a,b\n1,2\n3,4\n", description="more"
    )

    assert (first.version, second.version) == (1, 2)
    assert (first.type, first.metadata, first.run_id) == ("dataset", {"rows": 1}, world.run_id)
    assert second.description == "more"
    assert first.uri != second.uri
    assert parse_uri(first.uri).project == world.project  # type: ignore[union-attr]
    latest = await world.registry.get_artifact("iris")
    assert latest.artifact == second.artifact
    assert (await world.registry.get_artifact("iris", 1)).artifact == first.artifact
    assert [v.version for v in await world.registry.get_artifact_versions("iris")] == [1, 2]
    assert (await first.load("iris.csv")).read() == b"a,b\n1,2\n"
    assert (await second.load("data")).read() == b"a,b\n1,2\n3,4\n"


async def test_concurrent_creates_take_gapless_distinct_numbers(world: World) -> None:
    created = await asyncio.gather(
        *(world.registry.create_artifact("features", "dataset", {"writer": n}) for n in range(12))
    )
    assert sorted(a.version for a in created) == list(range(1, 13))
    listed = await world.registry.get_artifact_versions("features")
    assert [a.version for a in listed] == list(range(1, 13))
    assert sorted(a.metadata["writer"] for a in listed) == list(range(12))


async def test_download_writes_every_file_and_add_file_adds_one(
    world: World, tmp_path: Path
) -> None:
    folder = tmp_path / "images"
    (folder / "cats").mkdir(parents=True)
    (folder / "cats" / "a.png").write_bytes(b"\x89PNG-a")
    (folder / "b.png").write_bytes(b"\x89PNG-b")
    artifact = await world.registry.create_artifact("images", "dataset", files=folder)
    await artifact.add_file(b"labels", filename="labels.txt")

    assert await artifact.files() == ["images/b.png", "images/cats/a.png", "labels.txt"]
    target = tmp_path / "out"
    await (await world.registry.get_artifact("images")).download(target)
    assert (target / "images" / "cats" / "a.png").read_bytes() == b"\x89PNG-a"
    assert (target / "labels.txt").read_bytes() == b"labels"
    with pytest.raises(AlreadyExistsError) as taken:
        await artifact.add_file(b"again", filename="labels.txt")
    assert "never replaced" in taken.value.message  # it offered an upload with overwrite


async def test_add_file_stores_unnamed_bytes_as_data(world: World) -> None:
    """As create_artifact does (docs/models.md); add_file's docstring said bytes and
    file objects needed a filename, which they never did."""
    artifact = await world.registry.create_artifact("notes", "report")
    await artifact.add_file(io.BytesIO(b"first"))
    assert await artifact.files() == ["data"]
    assert (await artifact.load("data")).read() == b"first"
    with pytest.raises(AlreadyExistsError):
        await artifact.add_file(b"second", "")


async def test_missing_versions_and_unversioned_names(world: World) -> None:
    with pytest.raises(NotFoundError):
        await world.registry.get_artifact("nothing")
    await world.registry.create_artifact("once", "report")
    with pytest.raises(NotFoundError):
        await world.registry.get_artifact("once", 2)
    assert await world.registry.get_artifact_versions("nothing") == []

    # 0 is no version (they start at 1), not "the latest", which None asks for.
    for no_version in (0, -1):
        with pytest.raises(InvalidArgumentError) as refused:
            await world.registry.get_artifact("once", no_version)
        assert [field for field, _ in refused.value.field_violations] == ["version"]
    assert (await world.registry.get_artifact("once")).version == 1

    # A name is either versioned or not, so a lookup by name has one meaning.
    await world.registry.upsert_model_artifact(ModelArtifact("plain", uri="s3://b/plain"))
    with pytest.raises(AlreadyExistsError):
        await world.registry.create_artifact("plain", "model")
    with pytest.raises(AlreadyExistsError):
        await world.registry.upsert_model_artifact(ModelArtifact("once", uri="s3://b/once"))
    found = await world.registry.get_model_artifact_by_params(name="plain")
    assert found is not None and found.uri == "s3://b/plain"


async def test_ml_aides_sequence_run_with_used_artifacts_model_version_loaded_back(
    world: World, unique: str
) -> None:
    dataset = await world.registry.create_artifact(
        "train-set", "dataset", {"source": "warehouse"}, files=b"x,y\n0,0\n1,1\n"
    )
    run_id = await world.new_run()
    await world.tracking.log_inputs(run_id, [dataset.as_input("training")])
    await world.tracking.log_param(run_id, "threshold", 0.5)
    model = {"weights": [0.25, 0.75], "bias": -0.1}

    info = await world.tracking.log_model(
        run_id, model, "model", flavor="pickle", registered_model_name=f"scorer-{unique}"
    )
    await world.tracking.set_terminated(run_id)

    assert info.registered_model_version == 1
    loaded = await world.tracking.load_model(
        f"models:/scorer-{unique}/1", allow_pickle=True, cache_dir=world.cache
    )
    assert loaded == model
    lineage = await world.registry.get_model_version_lineage(f"scorer-{unique}", 1)
    assert lineage.run is not None and lineage.run.info.run_id == run_id
    assert [(i.uri, i.kind, i.name, i.context) for i in lineage.inputs] == [
        (dataset.uri, "dataset", "train-set", "training")
    ]
    assert lineage.params == {"threshold": "0.5"}


async def test_a_name_cannot_become_both_kinds_at_once(world: World) -> None:
    for n in range(5):
        name = f"contested-{n}"
        results = await asyncio.gather(
            world.registry.upsert_model_artifact(ModelArtifact(name, uri=f"s3://b/{name}")),
            world.registry.create_artifact(name, "model"),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        assert len(failures) == 1 and isinstance(failures[0], AlreadyExistsError), results


async def test_a_run_started_with_used_artifacts_records_them(world: World) -> None:
    dataset = await world.registry.create_artifact("used", "dataset", files=b"1\n")
    async with world.tracking.start_run(
        world.experiment_id, used_artifacts=[dataset], journal_dir=world.cache / "journal"
    ) as run:
        run_id = run.run_id
    stored = await world.tracking.get_run(run_id)
    assert [(i.uri, i.kind, i.name) for i in stored.inputs] == [(dataset.uri, "dataset", "used")]
    assert [r.info.run_id for r in await world.tracking.get_runs_using(dataset)] == [run_id]


async def test_a_versions_uri_cannot_change(world: World) -> None:
    from cairn.exceptions import FailedPreconditionError

    await world.registry.create_artifact("fixed", "model", files=b"1")
    found = await world.registry.get_model_artifact_by_params(name="fixed")
    assert found is not None and found.uri is not None
    kept = found.uri
    found.uri = "s3://bucket/fixed"
    found.description = "still describable"

    with pytest.raises(FailedPreconditionError) as raised:
        await world.registry.upsert_model_artifact(found)

    assert raised.value.reason == "ARTIFACT_URI_IMMUTABLE"
    assert kept in raised.value.message
    found.uri = kept
    assert (await world.registry.upsert_model_artifact(found)).description == "still describable"
    version = await world.registry.get_artifact("fixed")
    assert (version.uri, (await version.load("data")).read()) == (kept, b"1")


def test_a_version_outside_the_artifact_service_is_named_not_asserted() -> None:
    from cairn._clients.versioned_artifacts import ActiveArtifact
    from cairn.exceptions import FailedPreconditionError
    from cairn.types import VersionedArtifact

    elsewhere = VersionedArtifact("moved", 2, "model", uri="s3://bucket/moved")
    with pytest.raises(FailedPreconditionError) as raised:
        ActiveArtifact(elsewhere, transport=None)  # type: ignore[arg-type]
    assert "s3://bucket/moved" in raised.value.message


async def _stored_under(world: World, name: str) -> list[str]:
    prefix = f"registry/artifacts/{_segment(name)}/"
    return [info.path for info in await world.store.list(prefix, recursive=True)]


@pytest.mark.parametrize(
    ("name", "kind", "metadata", "refused"),
    [
        ("nested", "dataset", {"nested": {"a": 1}}, InvalidArgumentError),  # before sending
        ("wide", "dataset", {"n": 2**70}, InvalidArgumentError),  # before sending
        ("new\nline", "dataset", {}, InvalidArgumentError),  # the registry's name check
        ("long-type", "t" * 300, {}, InvalidArgumentError),  # before sending
    ],
)
async def test_a_refused_create_leaves_no_files(
    world: World, name: str, kind: str, metadata: dict, refused: type[Exception]
) -> None:
    with pytest.raises(refused):
        await world.registry.create_artifact(name, kind, metadata, files=b"x" * 1024)
    assert await _stored_under(world, name) == []


async def test_two_files_of_one_name_are_refused_before_any_is_sent(
    world: World, tmp_path: Path
) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "data.csv").write_text(folder)
    files = [tmp_path / "a" / "data.csv", tmp_path / "b" / "data.csv"]
    with pytest.raises(InvalidArgumentError) as refused:
        await world.registry.create_artifact("twice", "dataset", files=files)
    assert "data.csv" in refused.value.message
    assert await _stored_under(world, "twice") == []


@pytest.mark.parametrize("bad", ["bad.txt\u200b", "\ufeffbad.txt", "a\\b.txt", "tree/\ufeffc.txt"])
async def test_a_file_no_path_can_hold_is_refused_before_any_is_sent(
    world: World, tmp_path: Path, bad: str
) -> None:
    """Each file was checked only as its turn came: good.txt, sent first, stayed in the
    store, named by no version, and the error did not name the local file."""
    (tmp_path / "good.txt").write_text("good")
    (tmp_path / bad).parent.mkdir(exist_ok=True)
    (tmp_path / bad).write_text("bad")
    files = [tmp_path / "good.txt", tmp_path / bad.split("/")[0]]
    with pytest.raises(InvalidArgumentError) as refused:
        await world.registry.create_artifact("refused-path", "dataset", files=files)
    assert refused.value.reason == "INVALID_PATH"
    assert refused.value.metadata["path"].startswith(str(tmp_path))
    assert await _stored_under(world, "refused-path") == []


def _removing(path: Path) -> Callable[[int, int | None], None]:
    """A progress callable that removes path as the first file goes up: a file checked
    before any was sent, and gone by its turn."""
    return lambda done, total: path.unlink(missing_ok=True)


async def test_files_sent_for_a_version_a_later_file_keeps_from_being_made_are_removed(
    world: World, tmp_path: Path
) -> None:
    (tmp_path / "good.txt").write_text("good")
    (tmp_path / "gone.csv").write_text("gone")
    with pytest.raises(InvalidArgumentError) as refused:
        await world.registry.create_artifact(
            "missing-file",
            "dataset",
            files=[tmp_path / "good.txt", tmp_path / "gone.csv"],
            progress=_removing(tmp_path / "gone.csv"),
        )
    assert _violated(refused.value) == ["files"]
    assert await _stored_under(world, "missing-file") == []


async def test_a_create_cancelled_while_its_files_go_up_leaves_none(
    world: World, tmp_path: Path
) -> None:
    """Cancelled (Ctrl-C, a timeout around it) once its first file was stored, it left
    that file in the store, named by no version, with nothing to remove it ever."""
    (tmp_path / "first.txt").write_text("first")
    (tmp_path / "second.bin").write_bytes(b"s" * SECOND_FILE_BYTES)
    loop = asyncio.get_running_loop()

    def cancel_during_the_second(done: int, total: int | None) -> None:
        if total == SECOND_FILE_BYTES and done < total:
            loop.call_soon_threadsafe(creating.cancel)

    creating = asyncio.ensure_future(
        world.registry.create_artifact(
            "cancelled",
            "dataset",
            files=[tmp_path / "first.txt", tmp_path / "second.bin"],
            progress=cancel_during_the_second,
        )
    )
    with pytest.raises(asyncio.CancelledError):
        await creating
    assert await _stored_under(world, "cancelled") == []


async def test_a_create_run_again_under_its_request_id_is_answered_with_its_version(
    world: World, tmp_path: Path
) -> None:
    """A job that lost the answer to its create and ran it again made a second version,
    a copy of the first: create_artifact took no request id (its `metadata` is the
    version's), so the retry could not say it was one."""
    (tmp_path / "iris.csv").write_text("a,b\n1,2\n")
    create = functools.partial(world.registry.create_artifact, "retried", "dataset", {"rows": 1})
    first = await create(files=tmp_path / "iris.csv", request_id="job-7-iris")
    again = await create(files=tmp_path / "iris.csv", request_id="job-7-iris")

    assert (again.version, again.uri) == (first.version, first.uri) == (1, first.uri)
    assert [v.version for v in await world.registry.get_artifact_versions("retried")] == [1]
    assert await again.files() == ["iris.csv"]
    with pytest.raises(InvalidArgumentError) as reused:
        await create(files=b"other", request_id="job-7-iris", description="another")
    assert reused.value.reason == "REQUEST_ID_REUSED"
    assert len(await _stored_under(world, "retried")) == 1  # the refused one's went
    assert (await first.load("iris.csv")).read() == b"a,b\n1,2\n"
    for bad in ("", "x" * 129, "job\n7"):  # refused before anything is sent
        with pytest.raises(InvalidArgumentError) as refused:
            await create(files=b"data", request_id=bad)
        assert refused.value.field_violations[0][0] == "request_id"
    assert len(await _stored_under(world, "retried")) == 1


async def test_a_retry_sends_no_file_for_a_version_made_and_all_for_one_that_was_not(
    world: World, tmp_path: Path
) -> None:
    """Files a version names are never replaced: a retry of the call that made it is
    answered with it whatever its files now hold; a retry of a call that made none
    stores its files over those the failed call left there for it."""
    (tmp_path / "good.txt").write_text("good")
    create = functools.partial(world.registry.create_artifact, "kept", "dataset")
    made = await create(files=tmp_path / "good.txt", request_id="kept-1")
    (tmp_path / "good.txt").write_text("changed")
    again = await create(files=[tmp_path / "good.txt", tmp_path / "gone"], request_id="kept-1")
    assert again.artifact == made.artifact
    assert (await made.load("good.txt")).read() == b"good"

    (tmp_path / "gone").write_text("here when checked")
    with pytest.raises(InvalidArgumentError):  # its good.txt stays, for its retry
        await create(
            files=[tmp_path / "good.txt", tmp_path / "gone"],
            request_id="kept-2",
            progress=_removing(tmp_path / "gone"),
        )
    assert len(await _stored_under(world, "kept")) == 2
    (tmp_path / "gone").write_text("back")
    second = await create(files=[tmp_path / "good.txt", tmp_path / "gone"], request_id="kept-2")
    assert (second.version, await second.files()) == (2, ["gone", "good.txt"])
    assert len(await _stored_under(world, "kept")) == 3


async def test_a_call_that_fails_under_a_request_id_leaves_the_files_another_made_a_version_of(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two calls under one id at once (a job and its duplicate): the second looked for
    the version before the first made it, then failed, and removed the directory the
    first's version names, which was left without its files."""
    (tmp_path / "good.txt").write_text("good")
    create = functools.partial(world.registry.create_artifact, "twin", "dataset")
    made = await create(files=tmp_path / "good.txt", request_id="twin-1")
    monkeypatch.setattr(versioned_artifacts, "_version_naming", _not_made_yet)
    (tmp_path / "gone").write_text("here when checked")
    with pytest.raises(InvalidArgumentError):
        await create(
            files=[tmp_path / "good.txt", tmp_path / "gone"],
            request_id="twin-1",
            progress=_removing(tmp_path / "gone"),
        )
    assert await made.files() == ["good.txt"]
    assert (await made.load("good.txt")).read() == b"good"


async def _not_made_yet(registry: object, message: object) -> None:
    """What a call looking for its version finds before another call made it."""
    return None


async def test_any_name_the_registry_takes_holds_files(world: World) -> None:
    """Quoted, 120 characters of another script came to a path past 1,024 bytes."""
    for name in ("模" * 120, "🔑" * 100, "模" * 120 + "x"):
        created = await world.registry.create_artifact(name, "dataset", files=b"abc")
        await created.add_file(b"more", "second")
        assert await (await world.registry.get_artifact(name)).files() == ["data", "second"]


async def test_a_version_without_files_downloads_as_an_empty_directory(
    world: World, tmp_path: Path
) -> None:
    await world.registry.create_artifact("empty", "report", {"k": 1})
    found = await world.registry.get_artifact("empty")
    assert await found.download(tmp_path / "out") == str(tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


async def test_a_version_keeps_its_files_in_its_own_project(world: World, unique: str) -> None:
    """A raw CreateArtifact could point a version of this project at another project's
    directory, sending its readers there under this project's name."""
    registry = world.registry
    unparsed = ("cairn-artifacts://[bad/x", "s3://[bad/x")  # an unclosed "[" of a host
    for uri in (f"cairn-artifacts://other-{unique}/secret", *unparsed):
        message = pb.Artifact(project=registry.project, name="pointer", type="dataset", uri=uri)
        message.doc.SetInParent()
        with pytest.raises(InvalidArgumentError) as refused:
            await registry._transport.unary(
                registry._stub.CreateArtifact,
                api.CreateArtifactRequest(artifact=message, new_version=True),
            )
        assert refused.value.reason == "INVALID_ARTIFACT_LOCATION"
        assert ("is no URI" in refused.value.message) == ("[" in uri)


def _violated(error: InvalidArgumentError) -> list[str]:
    return [field for field, _ in error.field_violations]


@pytest.mark.parametrize("too_long", ["t" * 251, "数据集" * 30], ids=["characters", "bytes"])
async def test_a_type_no_run_input_can_have_as_kind_is_refused(world: World, too_long: str) -> None:
    """A type of 251 characters, or of 90 taking 270 bytes in UTF-8, was stored, and
    log_inputs then refused every as_input of it (inputs[0].kind: at most 250). The
    client refuses it before any file goes up, and the registry refuses it too; a type
    of 250 characters and 250 bytes is logged as a kind."""
    with pytest.raises(InvalidArgumentError) as refused:
        await world.registry.create_artifact("long", too_long, files=b"1\n")
    assert _violated(refused.value) == ["artifact_type"]
    assert await _stored_under(world, "long") == []
    registry = world.registry
    message = pb.Artifact(project=registry.project, name="long", type=too_long)
    message.doc.SetInParent()
    with pytest.raises(InvalidArgumentError) as raw:
        await registry._transport.unary(
            registry._stub.CreateArtifact,
            api.CreateArtifactRequest(artifact=message, new_version=True),
        )
    assert _violated(raw.value) == ["artifact.type"]
    for n, longest in enumerate(["t" * 250, "数" * 83 + "x"]):
        made = await registry.create_artifact(f"edge-{n}", longest, files=b"1\n")
        await world.tracking.log_inputs(world.run_id, [made.as_input("training")])
    kinds = {i.kind for i in (await world.tracking.get_run(world.run_id)).inputs}
    assert kinds == {"t" * 250, "数" * 83 + "x"}


async def test_as_input_of_a_type_stored_before_the_rule_is_refused_by_name(
    world: World, pool: asyncpg.Pool
) -> None:
    """A type stored before types were held to a kind's length stays readable, but
    as_input handed log_inputs a kind it refused, and start_run(used_artifacts=[it])
    made a run and left it FAILED. as_input names the version and its type, and
    start_run refuses it before any run is made."""
    made = await world.registry.create_artifact("old", "dataset", files=b"1\n")
    await pool.execute(
        "UPDATE registry.artifacts SET type = $2 WHERE id = $1", int(made.id), "t" * 256
    )
    stored = await world.registry.get_artifact("old")
    assert stored.type == "t" * 256
    with pytest.raises(InvalidArgumentError) as refused:
        stored.as_input("training")
    assert "version 1 of artifact 'old' has a type of 256 characters" in refused.value.message
    with pytest.raises(InvalidArgumentError):
        world.tracking.start_run(
            world.experiment_id, used_artifacts=[stored], journal_dir=world.cache / "journal"
        )
    runs = await world.tracking.search_runs(world.experiment_id, run_view_type="ALL")
    assert [r.info.run_id for r in runs] == [world.run_id]


async def test_an_empty_path_is_refused_before_any_byte_is_sent(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """files="" (an unset environment variable's path) is Path(""), the working
    directory: create_artifact and add_file uploaded every file in it, secrets too."""
    (tmp_path / "secret.env").write_text("TOKEN=hunter2")
    monkeypatch.chdir(tmp_path)
    for empty in ("", os.environ.get("CAIRN_TEST_UNSET_VARIABLE", "")):
        with pytest.raises(InvalidArgumentError) as refused:
            await world.registry.create_artifact("cwd", "dataset", {}, files=empty)
        assert _violated(refused.value) == ["files"]
    with pytest.raises(InvalidArgumentError) as listed:
        await world.registry.create_artifact("cwd", "dataset", files=[tmp_path / "secret.env", ""])
    assert _violated(listed.value) == ["files"]
    assert await world.registry.get_artifact_versions("cwd") == []
    assert await _stored_under(world, "cwd") == []

    made = await world.registry.create_artifact("cwd", "dataset")
    with pytest.raises(InvalidArgumentError) as added:
        await made.add_file("")
    assert _violated(added.value) == ["file"]
    assert await made.files() == []


async def test_bytes_like_files_are_stored_and_what_is_no_file_is_named(
    world: World, tmp_path: Path
) -> None:
    """A bytearray or memoryview raised TypeError (read as a list of numbers), files=5
    TypeError, a dict FileNotFoundError for its keys, and a missing path
    FileNotFoundError, where add_model's model_file is InvalidArgumentError."""
    made = await world.registry.create_artifact("like", "dataset", files=bytearray(b"ab"))
    assert (await made.load("data")).read() == b"ab"
    viewed = await world.registry.create_artifact("like", "dataset", files=memoryview(b"cd"))
    await viewed.add_file(bytearray(b"ef"), "more")
    await viewed.add_file(memoryview(b"gh"), "most")
    assert [(await viewed.load(n)).read() for n in ("data", "more", "most")] == [
        b"cd",
        b"ef",
        b"gh",
    ]
    for files in (5, {"a": b"x"}, tmp_path / "gone", str(tmp_path / "gone"), [b"1", 2]):
        with pytest.raises(InvalidArgumentError) as refused:
            await world.registry.create_artifact("refused-like", "dataset", files=files)  # type: ignore[arg-type]
        assert _violated(refused.value) == ["files"], files
    for file in (5, tmp_path / "gone", io.StringIO("text")):
        with pytest.raises(InvalidArgumentError) as refused:
            await made.add_file(file)  # type: ignore[arg-type]
        assert _violated(refused.value) == ["file"], file
    assert await _stored_under(world, "refused-like") == []
    assert await made.files() == ["data"]


async def test_a_name_no_artifact_can_have_has_no_versions(world: World) -> None:
    """get_artifact_versions quoted it into a filter past the filter's 4,096 characters:
    INVALID_ARGUMENT FILTER_TOO_COMPLEX, where get_artifact answers NotFoundError."""
    with pytest.raises(NotFoundError):
        await world.registry.get_artifact("n" * 5000)
    assert await world.registry.get_artifact_versions("n" * 5000) == []
    assert await world.registry.get_artifact_versions("'" * 256) == []


async def test_a_run_started_with_listed_versions_records_them(world: World) -> None:
    """get_artifact_versions' VersionedArtifacts were refused by start_run ("is no
    RunInput or versioned artifact"), though they are the versions docs/models.md says
    are logged: only ActiveArtifact had as_input."""
    await world.registry.create_artifact("listed", "dataset", files=b"1\n")
    await world.registry.create_artifact("listed", "dataset", files=b"2\n")
    versions = await world.registry.get_artifact_versions("listed")

    async with world.tracking.start_run(
        world.experiment_id, used_artifacts=versions, journal_dir=world.cache / "journal"
    ) as run:
        run_id = run.run_id

    stored = await world.tracking.get_run(run_id)
    assert sorted((i.uri, i.kind, i.name) for i in stored.inputs) == sorted(
        (v.uri, "dataset", "listed") for v in versions
    )
    old = VersionedArtifact("old", 3, "t" * 251, uri=versions[0].uri)
    with pytest.raises(InvalidArgumentError) as refused:
        old.as_input()
    assert "version 3 of artifact 'old' has a type of 251 characters" in refused.value.message
