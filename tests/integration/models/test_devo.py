"""Devo ML Model Manager's calls through the real services: add_model with an engine,
find_model, get_model downloading the file, force replacing it, get_models over every
page, and Devo's two exceptions."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest

import cairn
from cairn._clients.model_manager import FILES_ROOT
from cairn.exceptions import (
    InvalidArgumentError,
    ModelAlreadyExists,
    ModelNotFound,
    NotFoundError,
)
from cairn.models._uris import ArtifactUri
from cairn.types import ManagedModel, ModelArtifact, ModelVersion, RegisteredModel
from tests.integration.models.conftest import World

# A page of a version's artifacts, as the client lists them by default.
PAGE_OF_ARTIFACTS = 20


@pytest.fixture
def manager(world: World, tmp_path: Path) -> cairn.ModelManager:
    return cairn.ModelManager(world.registry, tmp_path / "downloads", cache_dir=world.cache)


def _counting(registry: cairn.ModelRegistryAPIClient) -> dict[str, int]:
    """Counts the calls of get_models' three listings on registry's stub (patched in
    place)."""
    calls: dict[str, int] = {}
    stub = registry._stub
    for name in ("ListRegisteredModels", "ListModelVersions", "ListArtifacts"):
        method = getattr(stub, name)

        def counted(*args: object, _m: object = method, _n: str = name, **kw: object) -> object:
            calls[_n] = calls.get(_n, 0) + 1
            return _m(*args, **kw)  # type: ignore[operator]

        setattr(stub, name, counted)
    return calls


async def test_add_find_get_and_force_replace(
    manager: cairn.ModelManager, world: World, tmp_path: Path
) -> None:
    onnx = tmp_path / "pokemon.onnx"
    onnx.write_bytes(b"onnx-v1")

    added = await manager.add_model(
        "pokemon_onnx_regression", "ONNX", onnx, description="A funny Pokemon prediction"
    )

    assert (added.name, added.engine, added.description) == (
        "pokemon_onnx_regression",
        "ONNX",
        "A funny Pokemon prediction",
    )
    assert (added.version, added.file_name, added.path) == (1, "pokemon.onnx", None)
    assert await manager.find_model("non_existing_model_name") is None
    with pytest.raises(ModelNotFound):
        await manager.get_model("non_existing_model_name")
    assert await manager.find_model("pokemon_onnx_regression") == added

    downloaded = await manager.get_model("pokemon_onnx_regression", download_file=True)
    assert downloaded.path == str(tmp_path / "downloads" / "pokemon.onnx")
    assert Path(downloaded.path).read_bytes() == b"onnx-v1"

    h2o = tmp_path / "m.json"
    h2o.write_text('{"h2o": 2}')
    with pytest.raises(ModelAlreadyExists):
        await manager.add_model("pokemon_onnx_regression", "H2O", h2o)
    replaced = await manager.add_model("pokemon_onnx_regression", "H2O", h2o, force=True)

    # Only engine, file and (when given) description change; the old file stays loadable.
    assert (replaced.engine, replaced.version, replaced.file_name) == ("H2O", 2, "m.json")
    assert replaced.description == "A funny Pokemon prediction"
    assert replaced.id == added.id
    found = await manager.find_model("pokemon_onnx_regression", download_file=True)
    assert found is not None and Path(found.path or "").read_text() == '{"h2o": 2}'
    first = await world.tracking.load_model(
        "models:/pokemon_onnx_regression/1", cache_dir=world.cache
    )
    assert Path(first).read_bytes() == b"onnx-v1"
    described = await manager.add_model(
        "pokemon_onnx_regression", "ONNX", onnx, description="v3", force=True
    )
    assert (described.description, described.version) == ("v3", 3)


async def test_a_forced_add_changes_the_description_alone(
    world: World, manager: cairn.ModelManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """add_model sent back the whole model it had read: custom properties another client
    set since were undone, with nothing said."""
    model_file = tmp_path / "model.onnx"
    model_file.write_bytes(b"onnx")
    await manager.add_model("kept", "ONNX", model_file, description="first")
    read = world.registry.get_registered_model_by_params

    async def read_then_another_writes(*args: Any, **kwargs: Any) -> RegisteredModel | None:
        found = await read(*args, **kwargs)
        if found is not None:
            approved = RegisteredModel("kept", id=found.id, custom_properties={"approved": True})
            await world.registry.upsert_registered_model(approved)
        return found

    monkeypatch.setattr(world.registry, "get_registered_model_by_params", read_then_another_writes)
    await manager.add_model("kept", "ONNX", model_file, description="second", force=True)
    monkeypatch.undo()
    stored = await world.registry.get_registered_model_by_params(name="kept")
    assert stored is not None
    assert (stored.description, stored.custom_properties) == ("second", {"approved": True})


async def test_the_stored_file_is_checked_and_named_by_its_sha256(
    manager: cairn.ModelManager, world: World, tmp_path: Path
) -> None:
    model_file = tmp_path / "model.bin"
    model_file.write_bytes(b"weights" * 1000)
    await manager.add_model("checked", "TORCH", model_file)

    version = await world.registry.get_model_version("checked", 1)
    [artifact] = await world.registry.get_model_artifacts(version.id)
    assert (artifact.model_format_name, artifact.uri) == ("TORCH", version.source_uri)
    manifest = await world.tracking.download_artifacts(
        f"{version.source_uri}/cairn-model.json", tmp_path / "m"
    )
    assert hashlib.sha256(model_file.read_bytes()).hexdigest() in Path(manifest).read_text()


async def test_get_models_returns_every_page(
    manager: cairn.ModelManager, world: World, tmp_path: Path
) -> None:
    model_file = tmp_path / "tiny.onnx"
    model_file.write_bytes(b"tiny")
    for n in range(23):  # pages of 5: the last one short
        await world.registry.create_registered_model(f"plain-{n:02d}")
    for n in range(6):  # versions and model artifacts over two pages as well
        await manager.add_model("with-engine", "ONNX", model_file, description="d", force=n > 0)
    paged = cairn.ModelManager(world.registry, tmp_path / "dl", page_size=5)
    calls = _counting(world.registry)

    models = await paged.get_models()

    # 24 models, 6 versions and 6 artifacts in pages of 5: 5 + 2 + 2 calls.
    assert calls == {"ListRegisteredModels": 5, "ListModelVersions": 2, "ListArtifacts": 2}

    assert len(models) == 24
    by_name = {m.name: m for m in models}
    assert (by_name["with-engine"].engine, by_name["with-engine"].version) == ("ONNX", 6)
    assert (by_name["plain-07"].engine, by_name["plain-07"].version) == (None, None)


async def test_get_model_downloads_a_pickled_model_without_unpickling_it(
    manager: cairn.ModelManager, world: World
) -> None:
    info = await world.tracking.log_model(
        world.run_id, {"a": 1}, "pickled", flavor="pickle", registered_model_name="pickled"
    )

    found = await manager.get_model("pickled", download_file=True)

    assert found.path == str(manager.download_path / "model.pkl")
    assert hashlib.sha256(Path(found.path).read_bytes()).hexdigest() == info.files["model.pkl"]
    assert sorted(p.name for p in manager.download_path.iterdir()) == ["model.pkl"]


async def test_get_model_downloads_a_model_of_a_flavor_not_registered_here(
    manager: cairn.ModelManager, world: World
) -> None:
    class Custom:
        name = "custom-here-only"
        libraries = ()
        unsafe = False

        def matches(self, model: object) -> bool:
            return False

        def save(self, model: object, directory: Path) -> dict[str, object]:
            (directory / "weights.txt").write_text(str(model))
            return {}

        def load(self, directory: Path, options: object) -> object:
            raise AssertionError("get_model must not load")

    await world.tracking.log_model(
        world.run_id, 42, "custom", flavor=Custom(), registered_model_name="custom"
    )

    found = await manager.get_model("custom", download_file=True)

    assert found.path is not None and Path(found.path).read_text() == "42"


async def test_get_model_takes_the_highest_version_number(
    manager: cairn.ModelManager, world: World, tmp_path: Path
) -> None:
    import asyncio

    from cairn.types import ModelVersion

    model_file = tmp_path / "m.onnx"
    model_file.write_bytes(b"m")
    added = await manager.add_model("many", "ONNX", model_file)
    # Made at once, the versions' creation times need not follow their numbers.
    await asyncio.gather(
        *(world.registry.upsert_model_version(ModelVersion(f"v{n}"), added.id) for n in range(12))
    )

    found = await manager.get_model("many")

    assert found.version == 13
    assert {m.name: m.version for m in await manager.get_models()}["many"] == 13


async def test_a_name_the_registry_refuses_is_refused_before_the_file_goes_up(
    manager: cairn.ModelManager, world: World, tmp_path: Path
) -> None:
    """Once a lookup by such a name found nothing (as MLflow's does) rather than refusing
    it, the file went up and stayed, unregistered, when the registry then refused the
    name."""
    model_file = tmp_path / "model.bin"
    model_file.write_bytes(b"weights")
    for refused in (" lead", "x" * 300, ""):
        with pytest.raises(InvalidArgumentError):
            await manager.add_model(refused, "TORCH", model_file)
    assert await world.store.list(FILES_ROOT, recursive=True) == []


async def test_a_file_name_or_engine_the_registry_refuses_is_refused_before_anything_is_made(
    manager: cairn.ModelManager, world: World, tmp_path: Path
) -> None:
    """The version's model artifact is named after the file, with the engine as its
    format: the registry refused an edge space or a NUL there only once the file was up
    and the model and its version made, and each add run again took that version up
    and was refused the same way, so the name never got a whole model."""
    for file_name, engine, argument in (
        ("m.onnx ", "ONNX", "model_file"),
        (" lead.onnx", "ONNX", "model_file"),
        ("m.onnx", "ON\x00NX", "engine"),
        ("m.onnx", "X" * 10_001, "engine"),
    ):
        model_file = tmp_path / file_name
        model_file.write_bytes(b"weights")
        with pytest.raises(InvalidArgumentError) as refused:
            await manager.add_model("refused-file", engine, model_file)
        assert await manager.find_model("refused-file") is None
        assert await world.store.list(FILES_ROOT, recursive=True) == []
        assert [field for field, _ in refused.value.field_violations] == [argument]
    # A file that is not there is named by Devo's argument (it was named "model"); a
    # folder of no file was taken, and get_model(download_file=True) of it answered the
    # whole download folder.
    (tmp_path / "empty").mkdir()
    for nothing in (tmp_path / "gone.onnx", tmp_path / "empty"):
        with pytest.raises(InvalidArgumentError) as missing:
            await manager.add_model("refused-file", "ONNX", nothing)
        assert [field for field, _ in missing.value.field_violations] == ["model_file"]


async def test_adds_of_one_new_name_at_once_leave_only_the_winners_files(
    world: World, tmp_path: Path
) -> None:
    """Six adds of one new name at once: one makes the model, the others are
    ModelAlreadyExists and take the files they uploaded away again. Before, each loser's
    upload stayed under registry/models/<name>/ for ever, named by no version."""
    model_file = tmp_path / "model.onnx"
    model_file.write_bytes(b"onnx" * 1000)
    managers = [cairn.ModelManager(world.registry, tmp_path / "dl") for _ in range(6)]

    outcomes = await asyncio.gather(
        *(manager.add_model("raced", "ONNX", model_file) for manager in managers),
        return_exceptions=True,
    )

    [added] = [outcome for outcome in outcomes if isinstance(outcome, ManagedModel)]
    assert all(isinstance(o, ModelAlreadyExists) for o in outcomes if o is not added), outcomes
    assert await _stored_directories(world) == {added.uri}


async def test_files_of_an_add_the_registry_refuses_are_removed(
    manager: cairn.ModelManager, world: World, tmp_path: Path
) -> None:
    """A description the registry refuses (known only once the file is up): the file goes
    again. Before, it stayed, named by no version."""
    model_file = tmp_path / "model.bin"
    model_file.write_bytes(b"weights")
    with pytest.raises(InvalidArgumentError):
        await manager.add_model("described", "TORCH", model_file, description="nul \x00")
    assert await _stored_directories(world) == set()


async def _stored_directories(world: World) -> set[str]:
    """The cairn-artifacts:// URI of each directory add_model stored files in."""
    stored = await world.store.list(FILES_ROOT, recursive=True)
    return {str(ArtifactUri(world.project, entry.path.rsplit("/", 1)[0])) for entry in stored}


async def test_find_model_raises_the_download_error_of_a_model_that_is_there(
    manager: cairn.ModelManager, world: World, tmp_path: Path
) -> None:
    """find_model(download_file=True) answered None, "no such model", for a model that
    is there when its download failed NOT_FOUND: its files deleted from the store, or
    its latest version without any. Devo's find_model is None only when the model is
    not there."""
    model_file = tmp_path / "m.onnx"
    model_file.write_bytes(b"onnx")
    added = await manager.add_model("files-gone", "ONNX", model_file)
    assert added.uri is not None
    await world.store.delete(added.uri.split("/", 3)[3], recursive=True)

    with pytest.raises(NotFoundError) as gone:
        await manager.get_model("files-gone", download_file=True)
    with pytest.raises(NotFoundError) as found:
        await manager.find_model("files-gone", download_file=True)
    assert found.value.reason == gone.value.reason == "OBJECT_NOT_FOUND"
    assert await manager.find_model("files-gone") == added

    await world.registry.upsert_model_version(ModelVersion("no-files"), added.id)
    with pytest.raises(NotFoundError) as no_files:
        await manager.find_model("files-gone", download_file=True)
    assert no_files.value.reason == "MODEL_VERSION_NOT_FOUND"
    assert await manager.find_model("non_existing_model_name", download_file=True) is None


async def test_an_empty_engine_is_refused_before_anything_is_made(
    manager: cairn.ModelManager, world: World, tmp_path: Path
) -> None:
    """add_model took an empty engine, which reads back as engine None, "no model
    artifact", of the model it had just added with one."""
    model_file = tmp_path / "m.onnx"
    model_file.write_bytes(b"onnx")
    for empty in ("", "   "):
        with pytest.raises(InvalidArgumentError) as refused:
            await manager.add_model("engineless", empty, model_file)
        assert [field for field, _ in refused.value.field_violations] == ["engine"]
    assert await manager.find_model("engineless") is None
    assert await world.store.list(FILES_ROOT, recursive=True) == []


async def test_an_empty_name_is_refused_naming_name(manager: cairn.ModelManager) -> None:
    """get_model("") and find_model("") said "give exactly one of name, external_id"
    (the registry lookup's words), naming an argument Devo's calls do not have."""
    for call in (manager.get_model, manager.find_model):
        with pytest.raises(InvalidArgumentError) as refused:
            await call("")
        assert [field for field, _ in refused.value.field_violations] == ["name"]
        assert "external_id" not in refused.value.message


async def test_a_copy_of_a_model_keeps_its_files_name(
    manager: cairn.ModelManager, world: World, tmp_path: Path, unique: str
) -> None:
    """The copy's model artifact was named after the model it was copied to, so its
    `file_name` was `copied-...` while get_model downloaded pokemon.onnx."""
    onnx = tmp_path / "pokemon.onnx"
    onnx.write_bytes(b"onnx-v1")
    await manager.add_model(f"original-{unique}", "ONNX", onnx, description="d")

    await world.registry.copy_model_version(f"models:/original-{unique}/1", f"copied-{unique}")
    copied = await manager.get_model(f"copied-{unique}", download_file=True)

    assert (copied.file_name, copied.engine) == ("pokemon.onnx", "ONNX")
    assert Path(copied.path or "").name == "pokemon.onnx"
    assert Path(copied.path or "").read_bytes() == b"onnx-v1"


async def test_a_version_with_nothing_to_copy_is_not_copied(world: World, unique: str) -> None:
    """A version made with no source and no model artifact was copied into one whose
    model artifact had no URI, which no load could read, its model made meanwhile."""
    model = await world.registry.upsert_registered_model(RegisteredModel(f"empty-{unique}"))
    await world.registry.upsert_model_version(ModelVersion("v"), model.id or "")

    with pytest.raises(NotFoundError) as refused:
        await world.registry.copy_model_version(f"models:/empty-{unique}/1", f"dst-{unique}")

    assert refused.value.reason == "MODEL_VERSION_NOT_FOUND"
    assert await world.registry.get_registered_model_by_params(f"dst-{unique}") is None


async def test_a_copy_is_named_after_the_artifact_of_its_files(world: World, unique: str) -> None:
    """Of a version with several model artifacts, the copy took the first's name (one
    without files, here), not that of the artifact whose files it copies; which may be
    past the first page of them."""
    model = await world.registry.upsert_registered_model(RegisteredModel(f"two-{unique}"))
    version = await world.registry.upsert_model_version(ModelVersion("v"), model.id or "")
    notes = [ModelArtifact(f"notes{n}") for n in range(PAGE_OF_ARTIFACTS)]
    for artifact in (*notes, ModelArtifact("weights.bin", uri="s3://b/w.bin")):
        await world.registry.upsert_model_artifact(artifact, version.id or "")

    copied = await world.registry.copy_model_version(f"models:/two-{unique}/1", f"c-{unique}")

    artifacts = await world.registry.get_model_artifacts(copied.id)
    assert [(a.name, a.uri) for a in artifacts] == [("weights.bin", "s3://b/w.bin")]
