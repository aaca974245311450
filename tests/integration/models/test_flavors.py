"""Flavors are pluggable; a model saved with other library versions loads with a warning;
an object no flavor recognises is refused with the names to choose from."""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from cairn.exceptions import InvalidArgumentError, NotFoundError
from cairn.models import MANIFEST, FileEntry, Manifest, PickleFlavor, get_flavor, register_flavor
from cairn.models._flavors import _FLAVORS
from tests.integration.models.conftest import World


@dataclasses.dataclass
class Vocabulary:
    words: list[str]


class VocabularyFlavor:
    """A flavor of a test's own: one word a line, no pickle."""

    name: ClassVar[str] = "vocabulary"
    libraries: ClassVar[tuple[str, ...]] = ("pytest",)
    unsafe: ClassVar[bool] = False

    def matches(self, model: Any) -> bool:
        return isinstance(model, Vocabulary)

    def save(self, model: Any, directory: Path) -> dict[str, Any]:
        (directory / "words.txt").write_text("\n".join(model.words))
        return {"file": "words.txt"}

    def load(self, directory: Path, options: Mapping[str, Any]) -> Vocabulary:
        return Vocabulary((directory / options["file"]).read_text().split("\n"))


@pytest.fixture
def vocabulary_flavor() -> Iterator[None]:
    register_flavor(VocabularyFlavor())
    yield
    del _FLAVORS["vocabulary"]


async def test_a_registered_flavor_is_picked_and_loaded(
    world: World, vocabulary_flavor: None
) -> None:
    info = await world.tracking.log_model(world.run_id, Vocabulary(["a", "b"]), "vocab")
    assert info.flavor == "vocabulary"
    loaded = await world.tracking.load_model(info.model_uri, cache_dir=world.cache)
    assert loaded == Vocabulary(["a", "b"])


class _KeepsAnOption(VocabularyFlavor):
    """A flavor keeping a `path` option it never reads as a file of the model."""

    name: ClassVar[str] = "keeps-an-option"

    def save(self, model: Any, directory: Path) -> dict[str, Any]:
        return {**super().save(model, directory), "path": "."}


async def test_a_registered_flavors_path_option_is_its_own(world: World) -> None:
    """The built-in flavors read `path` as a file of the model, and a manifest's is
    checked for them; checked for every flavor, one keeping another `path` (".", an
    origin) was logged and then refused at every load, "log the model again"."""
    register_flavor(_KeepsAnOption())
    try:
        info = await world.tracking.log_model(world.run_id, Vocabulary(["a"]), "keeps")
        loaded = await world.tracking.load_model(info.model_uri, cache_dir=world.cache)
    finally:
        del _FLAVORS[_KeepsAnOption.name]
    assert loaded == Vocabulary(["a"])


async def test_an_unknown_object_needs_a_flavor_named(world: World) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        await world.tracking.log_model(world.run_id, object(), "m")
    assert "flavor='pickle'" in raised.value.message
    with pytest.raises(InvalidArgumentError):
        await world.tracking.log_model(world.run_id, object(), "m", flavor="onnx")
    assert isinstance(get_flavor("pickle"), PickleFlavor)


async def test_other_versions_load_with_a_warning(world: World) -> None:
    """A model directory written by hand, as another machine's Python would have."""
    root = (await world.tracking.get_run(world.run_id)).info.artifact_uri.split("/", 3)[3]
    stored = await world.store.upload(f"{root}/old/model.pkl", b"\x80\x04K\x07.")  # pickle of 7
    manifest = Manifest(
        flavor="pickle",
        options={"path": "model.pkl"},
        files={"model.pkl": FileEntry(stored.size, stored.sha256)},
        python_version="3.1.0",
        libraries={"numpy": "0.0.1"},
    )
    await world.store.upload(f"{root}/old/{MANIFEST}", manifest.to_json())

    with pytest.warns(UserWarning) as warned:
        loaded = await world.tracking.load_model(
            f"runs:/{world.run_id}/old", allow_pickle=True, cache_dir=world.cache
        )

    assert loaded == 7
    message = str(warned[0].message)
    assert "python 3.1 -> " + ".".join(platform.python_version().split(".")[:2]) in message
    assert "numpy 0.0.1 -> " in message


async def test_a_model_file_named_like_the_manifest_is_refused(
    world: World, tmp_path: Path
) -> None:
    (tmp_path / MANIFEST).write_text('{"mine": true}')

    with pytest.raises(InvalidArgumentError) as raised:
        await world.tracking.log_model(world.run_id, tmp_path / MANIFEST, "named-like")

    assert raised.value.reason == "INVALID_PATH" and MANIFEST in raised.value.message
    with pytest.raises(NotFoundError):  # nothing was logged
        await world.tracking.load_model(f"runs:/{world.run_id}/named-like")
    (tmp_path / "dir" / MANIFEST).mkdir(parents=True)
    (tmp_path / "dir" / MANIFEST / "weights.bin").write_bytes(b"w")
    with pytest.raises(InvalidArgumentError):
        await world.tracking.log_model(world.run_id, tmp_path / "dir" / MANIFEST, "named-dir")


async def test_a_folder_of_no_file_is_no_model(world: World, tmp_path: Path) -> None:
    """It was logged with no file, and load_model answered a path that was never made."""
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "empty" / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(InvalidArgumentError) as refused:
        await world.tracking.log_model(world.run_id, tmp_path / "empty", "empty")
    assert refused.value.field_violations[0][0] == "model"
    with pytest.raises(NotFoundError):  # nothing was logged
        await world.tracking.load_model(f"runs:/{world.run_id}/empty")
