"""Every URI form names the same files to load_model and download_artifacts, and the
registry hands out only URIs a client can resolve."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from cairn.exceptions import FailedPreconditionError, InvalidArgumentError, NotFoundError
from cairn.types import ModelArtifact
from tests.integration.models.conftest import World


@pytest.fixture
async def two_versions(world: World, unique: str) -> str:
    """Model versions 1 ({"v": 1}, alias gold) and 2 ({"v": 2}, in Production)."""
    name = f"forms-{unique}"
    await world.tracking.log_model(
        world.run_id, {"v": 1}, "model", flavor="pickle", registered_model_name=name
    )
    await world.tracking.log_model(
        await world.new_run(), {"v": 2}, "model", flavor="pickle", registered_model_name=name
    )
    await world.registry.set_registered_model_alias(name, "gold", 1)
    await world.registry.transition_model_version_stage(name, 2, "Production")
    return name


async def test_each_uri_form_loads_its_version(world: World, two_versions: str) -> None:
    name = two_versions
    run_root = (await world.tracking.get_run(world.run_id)).info.artifact_uri
    expected = {
        f"models:/{name}/1": 1,
        f"models:/{name}/2": 2,
        f"models:/{name}@gold": 1,
        f"models:/{name}/Production": 2,
        f"models:/{name}/production": 2,
        f"models:/{name}/latest": 2,
        f"runs:/{world.run_id}/model": 1,
        f"{run_root}/model": 1,  # cairn-artifacts://<project>/<path>
    }
    for uri, version in expected.items():
        loaded = await world.tracking.load_model(uri, allow_pickle=True, cache_dir=world.cache)
        assert loaded == {"v": version}, uri


async def test_uris_that_name_nothing(world: World, two_versions: str) -> None:
    name = two_versions
    for uri, reason in (
        (f"models:/{name}/Staging", "MODEL_VERSION_NOT_FOUND"),
        (f"models:/{name}/9", "MODEL_VERSION_NOT_FOUND"),
        (f"models:/{name}@silver", "MODEL_VERSION_NOT_FOUND"),
        (f"models:/absent-{name}/1", "REGISTERED_MODEL_NOT_FOUND"),
        (f"runs:/{world.run_id}/no-model", "OBJECT_NOT_FOUND"),
    ):
        with pytest.raises(NotFoundError) as raised:
            await world.tracking.load_model(uri, allow_pickle=True, cache_dir=world.cache)
        assert raised.value.reason == reason, uri
    with pytest.raises(InvalidArgumentError):
        await world.tracking.load_model(f"models:/{name}", cache_dir=world.cache)


async def test_download_artifacts_takes_every_form(
    world: World, two_versions: str, tmp_path: Path
) -> None:
    name = two_versions
    (tmp_path / "notes.txt").write_text("read me")
    await world.tracking.log_artifact(world.run_id, tmp_path / "notes.txt", "docs")
    run_root = (await world.tracking.get_run(world.run_id)).info.artifact_uri

    for index, uri in enumerate(
        (f"models:/{name}@gold", f"runs:/{world.run_id}/model", f"{run_root}/model")
    ):
        written = Path(
            await world.tracking.download_artifacts(
                uri, tmp_path / f"dst{index}", cache_dir=world.cache
            )
        )
        assert written == tmp_path / f"dst{index}" / "model"
        assert sorted(p.name for p in written.iterdir()) == ["cairn-model.json", "model.pkl"]
    # Plain artifacts, not models, come straight from the store.
    for uri in (f"runs:/{world.run_id}/docs/notes.txt", f"{run_root}/docs/notes.txt"):
        written = Path(await world.tracking.download_artifacts(uri, tmp_path / "plain"))
        assert written.read_text() == "read me"
    tree = Path(await world.tracking.download_artifacts(f"runs:/{world.run_id}/docs", tmp_path))
    assert (tree / "notes.txt").read_text() == "read me"
    # The run form still works as in MLflow.
    one = await world.tracking.download_artifacts(world.run_id, "docs/notes.txt", tmp_path / "r")
    assert Path(one).read_text() == "read me"
    # A run's root lands in dst itself, as the run form's "" does. Before, the URI form
    # wrote dst/artifacts, the store's name of a run's root, which no user gave.
    by_uri = await world.tracking.download_artifacts(f"runs:/{world.run_id}", tmp_path / "u")
    by_id = await world.tracking.download_artifacts(world.run_id, "", tmp_path / "i")
    for root, dst in ((by_uri, "u"), (by_id, "i")):
        assert Path(root) == tmp_path / dst
        assert (tmp_path / dst / "docs" / "notes.txt").read_text() == "read me"


async def test_the_registry_refuses_server_paths(world: World, unique: str) -> None:
    name = f"paths-{unique}"
    await world.registry.create_registered_model(name)
    with pytest.raises(InvalidArgumentError) as raised:
        await world.registry.create_model_version(name, "file:///srv/.cairn/artifacts/x/model")
    assert raised.value.reason == "INVALID_ARTIFACT_LOCATION"
    assert "cairn-artifacts://" in raised.value.message
    version = await world.registry.create_model_version(name, "s3://b/x")
    with pytest.raises(InvalidArgumentError):
        await world.registry.upsert_model_artifact(
            ModelArtifact("m", uri="FILE:///tmp/model.onnx"), version.id
        )
    # Read as URL parsers (urllib's too) read them, past the spaces and controls they
    # skip, and the tabs and line breaks they drop, file: URIs; they were stored.
    for uri in (" file:model.onnx", "\x01file:m", "fi\tle:m.onnx", "file\n:m", "s3://b/m\t"):
        with pytest.raises(InvalidArgumentError) as raised:
            await world.registry.create_model_version(name, uri)
        assert raised.value.reason == "INVALID_ARTIFACT_LOCATION"
    # A last space stays: a run's artifact directory may end in one (log_model's test
    # of a directory "model " registers such a URI).
    assert (await world.registry.create_model_version(name, "s3://b/m ")).source == "s3://b/m "


async def test_an_uploaded_file_registered_by_its_artifact_uri_loads(
    world: World, unique: str, tmp_path: Path
) -> None:
    """The upload-then-register path of the issue: the object's artifact_uri, not its
    storage uri, goes to the registry, and comes back resolvable."""
    (tmp_path / "weights.onnx").write_bytes(b"onnx")
    info = await world.tracking.log_model(world.run_id, tmp_path / "weights.onnx", "onnx")
    stored = await world.store.stat(f"{info.artifact_uri.split('/', 3)[3]}/weights.onnx")
    assert stored.uri.startswith("file://")  # where this backend keeps the bytes
    name = f"uploaded-{unique}"
    await world.registry.create_registered_model(name)
    await world.registry.create_model_version(name, info.artifact_uri)

    download_uri = await world.registry.get_model_version_download_uri(name, 1)

    assert download_uri == info.artifact_uri
    loaded = await world.tracking.load_model(f"models:/{name}/1", cache_dir=world.cache)
    assert Path(loaded).read_bytes() == b"onnx"


async def test_a_version_stored_outside_cairn_is_named_not_fetched(
    world: World, unique: str
) -> None:
    name = f"s3-{unique}"
    await world.registry.create_registered_model(name)
    await world.registry.create_model_version(name, "s3://bucket/models/churn")
    with pytest.raises(FailedPreconditionError) as raised:
        await world.tracking.load_model(f"models:/{name}/1", cache_dir=world.cache)
    assert raised.value.reason == "INVALID_ARTIFACT_LOCATION"
    assert "s3://bucket/models/churn" in raised.value.message


async def test_a_malformed_cairn_source_is_reported_as_such_not_as_outside_cairn(
    world: World, unique: str, pool: asyncpg.Pool
) -> None:
    """The first source is one stored before the registry refused it."""
    name = f"bad-source-{unique}"
    await world.registry.create_registered_model(name)
    stored = await world.registry.create_model_version(name, f"cairn-artifacts://{world.project}/a")
    assert stored.id is not None
    await pool.execute(
        "UPDATE registry.model_versions SET source_uri = $2 WHERE id = $1",
        int(stored.id),
        f"cairn-artifacts://{world.project}/a/../b",
    )
    await world.registry.create_model_version(name, f"runs:/{'x' * 300}/model")

    with pytest.raises(InvalidArgumentError) as raised:
        await world.tracking.load_model(f"models:/{name}/1", cache_dir=world.cache)
    assert "'..'" in raised.value.message
    with pytest.raises(InvalidArgumentError) as raised:  # the tracking service's refusal
        await world.tracking.load_model(f"models:/{name}/2", cache_dir=world.cache)
    assert "outside Cairn" not in raised.value.message


@pytest.mark.parametrize("name", ["a//b", "..", "x/..", "a/", "./m"])
async def test_no_uri_names_a_model_by_an_empty_dot_or_dot_dot_segment(
    world: World, unique: str, pool: asyncpg.Pool, name: str
) -> None:
    """Of a model stored under such a name before the registry refused it. load_model
    resolved models:/<name>/1 (docs/models.md says such segments are refused), and
    copy_model_version, whose source URI the registry refused, created its destination
    first and left it behind without a version."""
    logged = f"logged-{unique}"
    await world.tracking.log_model(
        world.run_id, {"v": 1}, "model", flavor="pickle", registered_model_name=logged
    )
    model_id = (await world.registry.get_registered_model(logged)).id
    assert model_id is not None
    await pool.execute(
        "UPDATE registry.registered_models SET name = $2 WHERE id = $1", int(model_id), name
    )
    with pytest.raises(InvalidArgumentError):
        await world.tracking.load_model(
            f"models:/{name}/1", allow_pickle=True, cache_dir=world.cache
        )
    with pytest.raises(InvalidArgumentError) as copying:
        await world.registry.copy_model_version(f"models:/{name}/1", "copy")
    assert [field for field, _ in copying.value.field_violations] == ["src_model_uri"]
    assert await world.registry.get_registered_model_by_params(name="copy") is None
    # Renamed away, it is named by a URI again.
    await world.registry.rename_registered_model(name, logged)
    await world.registry.copy_model_version(f"models:/{logged}/1", "copy")
    loaded = await world.tracking.load_model(
        "models:/copy/1", allow_pickle=True, cache_dir=world.cache
    )
    assert loaded == {"v": 1}


@pytest.mark.parametrize(
    "path",
    ["/srv/cairn/.cairn/artifacts/default/x/model", "models/m.onnx", "~/m.onnx", "C:\\m.onnx"],
)
async def test_the_registry_refuses_paths_without_a_scheme(
    world: World, unique: str, path: str
) -> None:
    name = f"bare-{unique}"
    await world.registry.create_registered_model(name)
    with pytest.raises(InvalidArgumentError) as raised:
        await world.registry.create_model_version(name, path)
    assert raised.value.reason == "INVALID_ARTIFACT_LOCATION"
    version = await world.registry.create_model_version(name, "s3://bucket/models/m")
    with pytest.raises(InvalidArgumentError) as raised:
        await world.registry.upsert_model_artifact(ModelArtifact("m", uri=path), version.id)
    assert raised.value.reason == "INVALID_ARTIFACT_LOCATION"
    assert await world.registry.get_model_version_download_uri(name, 1) == "s3://bucket/models/m"


async def test_a_model_has_a_directory_and_a_runs_root_downloads_whole(
    world: World, tmp_path: Path
) -> None:
    """log_model took "" and "/", logging at the run's root, and a download of
    runs:/<run_id> then wrote the model alone, none of the run's other files."""
    for the_root in ("", "/", ".", "a/.."):
        with pytest.raises(InvalidArgumentError) as refused:
            await world.tracking.log_model(world.run_id, [1], the_root, flavor="pickle")
        assert refused.value.field_violations[0][0] == "name"
    info = await world.tracking.log_model(world.run_id, [1], "./m", flavor="pickle")
    assert info.model_uri == f"runs:/{world.run_id}/m"
    # A model at the root, as an older client could log one, and a file beside it.
    model = Path(await world.tracking.download_artifacts(info.model_uri, tmp_path / "m"))
    await world.tracking.log_artifacts(world.run_id, model, "")
    (tmp_path / "notes.txt").write_text("read me")
    await world.tracking.log_artifact(world.run_id, tmp_path / "notes.txt", "docs")

    root = Path(await world.tracking.download_artifacts(f"runs:/{world.run_id}", tmp_path / "r"))
    assert (root / "docs" / "notes.txt").read_text() == "read me"
    assert (root / "m" / "model.pkl").exists() and (root / "model.pkl").exists()
