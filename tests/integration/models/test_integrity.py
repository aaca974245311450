"""What load_model checks: each file's sha256 against the manifest, the trust a pickle
needs, and the cache that spares a second download."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from typing import Any

import pytest

from cairn._clients import _downloads, _file_batches
from cairn._clients.model_sources import MANIFEST_TAG
from cairn.exceptions import DataLossError
from cairn.models import MANIFEST, UntrustedModelError
from cairn.models._cache import remove
from cairn.models._uris import MAX_HOPS
from tests.integration.models.conftest import World


def _model_dir(root: Path) -> Path:
    (root / "bundle" / "sub").mkdir(parents=True)
    (root / "bundle" / "config.json").write_text('{"layers": 2}')
    (root / "bundle" / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 64)
    return root / "bundle"


def _store_path(artifact_uri: str) -> str:
    return artifact_uri.split("/", 3)[3]  # cairn-artifacts://<project>/<path>


async def test_a_directory_comes_back_as_a_local_path(world: World, tmp_path: Path) -> None:
    info = await world.tracking.log_model(world.run_id, _model_dir(tmp_path), "bundle-model")
    assert info.flavor == "files"
    assert set(info.files) == {"bundle/config.json", "bundle/sub/weights.bin"}

    loaded = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))

    assert loaded.is_dir() and loaded.name == "bundle"
    assert (loaded / "config.json").read_text() == '{"layers": 2}'
    assert (loaded / "sub" / "weights.bin").read_bytes() == bytes(range(256)) * 64
    assert loaded.is_relative_to(world.cache / info.manifest_sha256)


async def test_a_models_small_files_come_down_in_one_call(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its files batched as a directory's download batches them (one DownloadFiles
    call), where each file was a stat and a download of its own."""
    info = await world.tracking.log_model(world.run_id, _model_dir(tmp_path), "bundle-model")
    calls: list[str] = []
    for part, method in ((_file_batches.FileFetches, "fetch"), (_downloads.Downloads, "file")):
        monkeypatch.setattr(part, method, _counted(getattr(part, method), method, calls))

    loaded = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))

    assert (loaded / "sub" / "weights.bin").read_bytes() == bytes(range(256)) * 64
    assert calls == ["fetch"]


def _counted(method: Any, name: str, calls: list[str]) -> Any:
    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return await method(*args, **kwargs)

    return counted


async def test_a_changed_file_is_refused(world: World, tmp_path: Path) -> None:
    info = await world.tracking.log_model(world.run_id, _model_dir(tmp_path), "bundle-model")
    changed = f"{_store_path(info.artifact_uri)}/bundle/sub/weights.bin"
    # The store itself is consistent (its own sha256 matches the new bytes): only the
    # manifest knows these are not the bytes that were logged.
    await world.store.upload(changed, b"tampered", overwrite=True)

    with pytest.raises(DataLossError) as raised:
        await world.tracking.load_model(info.model_uri, cache_dir=world.cache)

    assert raised.value.reason == "CHECKSUM_MISMATCH"
    assert raised.value.metadata["file"] == "bundle/sub/weights.bin"
    assert raised.value.metadata["expected_sha256"] == info.files["bundle/sub/weights.bin"]
    assert "changed since" in raised.value.message
    # Nothing half-checked stays in the cache.
    assert not world.cache.exists() or [p.name for p in world.cache.iterdir()] == []
    with pytest.raises(DataLossError):
        await world.tracking.download_artifacts(info.model_uri, tmp_path / "dst")


async def test_a_second_load_fetches_nothing_but_the_manifest(
    world: World, tmp_path: Path, unique: str
) -> None:
    name = f"cached-{unique}"
    info = await world.tracking.log_model(
        world.run_id, _model_dir(tmp_path), "bundle-model", registered_model_name=name
    )
    first = await world.tracking.load_model(f"models:/{name}/1", cache_dir=world.cache)
    # Remove the model's files from the store, its manifest excepted: a load that still
    # succeeds cannot have fetched them.
    for relative in info.files:
        await world.store.delete(f"{_store_path(info.artifact_uri)}/{relative}")

    again = await world.tracking.load_model(f"models:/{name}/1", cache_dir=world.cache)
    by_run = await world.tracking.load_model(info.model_uri, cache_dir=world.cache)

    assert again == by_run == first
    assert [p.name for p in world.cache.iterdir()] == [info.manifest_sha256]
    # Another cache has to fetch, and the files are gone: the first cache was used.
    with pytest.raises(DataLossError) as gone:
        await world.tracking.load_model(info.model_uri, cache_dir=tmp_path / "other-cache")
    assert gone.value.reason == "OBJECT_BYTES_MISSING"


async def test_a_cache_entry_cut_short_is_fetched_again(world: World, tmp_path: Path) -> None:
    info = await world.tracking.log_model(world.run_id, _model_dir(tmp_path), "bundle-model")
    loaded = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))
    (loaded / "sub" / "weights.bin").chmod(0o644)  # the cache's files are read-only
    (loaded / "sub" / "weights.bin").write_bytes(b"short")

    again = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))

    assert (again / "sub" / "weights.bin").read_bytes() == bytes(range(256)) * 64


@pytest.mark.parametrize(
    "added",
    [
        "override.json",
        "sub/extra/weights.bin",
        "__pycache__/override.json",  # in Python's folder, but not what Python writes
        "sub/__pycache__/weights.cpython-311.pyc",  # compiled from no module of the model
    ],
)
async def test_a_file_added_to_a_cache_entry_is_never_served(
    world: World, tmp_path: Path, added: str
) -> None:
    """The entry's folders stay writable: a file added beside the model's (a config a
    loader would read) was served by every later load, as the load checked only the
    manifest's files. Under a __pycache__ folder, any file was."""
    info = await world.tracking.log_model(world.run_id, _model_dir(tmp_path), "bundle-model")
    loaded = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))
    (loaded / added).parent.mkdir(parents=True, exist_ok=True)
    (loaded / added).write_text('{"layers": 99}')

    again = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))

    files = sorted(p.relative_to(again).as_posix() for p in again.rglob("*") if p.is_file())
    assert files == ["config.json", "sub/weights.bin"]


@pytest.mark.parametrize("link", ["to-a-twin", "out-of-the-entry", "folder"])
async def test_a_file_of_a_cache_entry_replaced_by_a_link_is_never_served(
    world: World, tmp_path: Path, link: str
) -> None:
    """The lookup followed links: a.bin made a link to b.bin (of a.bin's size) was
    served, and copied by download_artifacts, as a.bin; a link to a file outside the
    entry stopped every load with "names a file outside the model's directory; log the
    model again", and the entry was never dropped."""
    model = tmp_path / "twins"
    (model / "sub").mkdir(parents=True)
    (model / "sub" / "a.bin").write_bytes(b"A" * 100)
    (model / "sub" / "b.bin").write_bytes(b"B" * 100)
    info = await world.tracking.log_model(world.run_id, model, "twins")
    loaded = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.bin").write_bytes(b"E" * 100)
    (elsewhere / "b.bin").write_bytes(b"B" * 100)
    sub = loaded / "sub"
    sub.chmod(0o755)  # the cache's folders stay writable; its files are read-only
    if link == "folder":
        for file in sub.iterdir():
            file.unlink()
        sub.rmdir()
        sub.symlink_to(elsewhere, target_is_directory=True)
    else:
        (sub / "a.bin").unlink()
        target = sub / "b.bin" if link == "to-a-twin" else elsewhere / "a.bin"
        (sub / "a.bin").symlink_to(target)

    again = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))
    assert not (again / "sub").is_symlink() and not (again / "sub" / "a.bin").is_symlink()
    assert (again / "sub" / "a.bin").read_bytes() == b"A" * 100
    copied = Path(await world.tracking.download_artifacts(info.model_uri, tmp_path / "dst"))
    assert (copied / "twins" / "sub" / "a.bin").read_bytes() == b"A" * 100


async def test_the_bytecode_python_caches_beside_a_loaded_module_is_no_edit(
    world: World, tmp_path: Path
) -> None:
    """A model shipping code, imported from its entry, gets a __pycache__ folder there:
    the load that dropped every entry holding a file its manifest does not name fetched
    such a model again on each load, and deleted the folder under the running code."""
    (_model_dir(tmp_path) / "sub" / "helper.py").write_text("VALUE = 1\n")
    info = await world.tracking.log_model(world.run_id, tmp_path / "bundle", "bundle-model")
    loaded = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))
    bytecode = loaded / "sub" / "__pycache__" / "helper.cpython-311.pyc"
    bytecode.parent.mkdir()
    bytecode.write_bytes(b"compiled")

    again = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))

    assert again == loaded and bytecode.read_bytes() == b"compiled"


async def test_bytecode_shipped_with_the_model_may_be_rewritten_by_python(
    world: World, tmp_path: Path
) -> None:
    """A model logged from a folder whose code its author had run ships that code's
    __pycache__. Stale to the Python that imports it from the entry (the sources are
    as old as their download), it is compiled again and replaced; the load, finding a
    file of the manifest changed, fetched the whole model again each time, bringing the
    stale file back for the next import."""
    bundle = _model_dir(tmp_path)
    (bundle / "sub" / "helper.py").write_text("VALUE = 1\n")
    (bundle / "sub" / "__pycache__").mkdir()
    (bundle / "sub" / "__pycache__" / "helper.cpython-311.pyc").write_bytes(b"stale")
    info = await world.tracking.log_model(world.run_id, bundle, "bundle-model")
    assert "bundle/sub/__pycache__/helper.cpython-311.pyc" in info.files
    loaded = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))
    bytecode = loaded / "sub" / "__pycache__" / "helper.cpython-311.pyc"
    fresh = bytecode.with_name(f"{bytecode.name}.12345")  # as Python writes one
    fresh.write_bytes(b"compiled again")
    fresh.replace(bytecode)

    again = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))

    assert again == loaded and bytecode.read_bytes() == b"compiled again"


@pytest.mark.parametrize("rewritten", [b"compiled again", b"FORGE"])  # "FORGE": stale's size
async def test_a_copy_holds_the_shipped_bytecode_though_python_rewrote_the_entrys(
    world: World, tmp_path: Path, rewritten: bytes
) -> None:
    """A download (a copy of the cache entry) holds exactly the manifest's files, the
    bytecode the model shipped too, taken from the store: copied from an entry Python
    had rewritten it in, it failed every download ("copied 14 of 5 bytes"), or, of the
    same size, was handed out as the model's. The entry stays as Python left it."""
    bundle = _model_dir(tmp_path)
    (bundle / "sub" / "helper.py").write_text("VALUE = 1\n")
    (bundle / "sub" / "__pycache__").mkdir()
    (bundle / "sub" / "__pycache__" / "helper.cpython-311.pyc").write_bytes(b"stale")
    info = await world.tracking.log_model(world.run_id, bundle, "bundle-model")
    loaded = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))
    bytecode = loaded / "sub" / "__pycache__" / "helper.cpython-311.pyc"
    fresh = bytecode.with_name(f"{bytecode.name}.12345")  # as Python writes one
    fresh.write_bytes(rewritten)
    fresh.replace(bytecode)

    dst = tmp_path / "dst"
    copied = Path(
        await world.tracking.download_artifacts(info.model_uri, dst, cache_dir=world.cache)
    )

    shipped = copied / "bundle" / "sub"
    assert (shipped / "__pycache__" / "helper.cpython-311.pyc").read_bytes() == b"stale"
    assert (shipped / "helper.py").read_text() == "VALUE = 1\n"
    again = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))
    assert again == loaded and bytecode.read_bytes() == rewritten  # not fetched again


async def test_a_copy_takes_the_shipped_bytecode_from_the_entry_that_holds_it(
    world: World, tmp_path: Path
) -> None:
    """Bytecode the cache entry holds as shipped is copied from there: every copy
    fetched all of it from the store again, two calls a file (300 files: 1.9 s against
    0.08 s), here seen as a copy that needs no file of the store."""
    bundle = _model_dir(tmp_path)
    (bundle / "sub" / "helper.py").write_text("VALUE = 1\n")
    (bundle / "sub" / "__pycache__").mkdir()
    (bundle / "sub" / "__pycache__" / "helper.cpython-311.pyc").write_bytes(b"stale")
    info = await world.tracking.log_model(world.run_id, bundle, "bundle-model")
    await world.tracking.load_model(info.model_uri, cache_dir=world.cache)
    stored = f"{_store_path(info.artifact_uri)}/bundle/sub/__pycache__/helper.cpython-311.pyc"
    await world.store.delete(stored)

    dst = tmp_path / "dst"
    copied = Path(
        await world.tracking.download_artifacts(info.model_uri, dst, cache_dir=world.cache)
    )

    shipped = copied / "bundle" / "sub" / "__pycache__" / "helper.cpython-311.pyc"
    assert shipped.read_bytes() == b"stale"


async def test_an_entry_made_a_link_is_never_served(world: World, tmp_path: Path) -> None:
    """The entry itself a link (to a copy of it elsewhere, say) was served: a path out of
    the cache, which nothing guards, for every later load."""
    info = await world.tracking.log_model(world.run_id, _model_dir(tmp_path), "bundle-model")
    entry = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache)).parent
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(entry, elsewhere, symlinks=True)
    remove(entry)
    entry.symlink_to(elsewhere, target_is_directory=True)

    again = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))

    assert again.parent == entry and not entry.is_symlink()
    assert (again / "sub" / "weights.bin").read_bytes() == bytes(range(256)) * 64
    assert (elsewhere / MANIFEST).is_file()  # left as it was
    assert [p.name for p in world.cache.iterdir()] == [entry.name]  # no link left aside


async def test_a_pycache_folder_linked_out_of_the_entry_is_never_served(
    world: World, tmp_path: Path
) -> None:
    """A __pycache__ that is a link to a folder elsewhere passed as Python's: the walk
    of the entry does not follow links, and Python does, to compiled code no one checks."""
    (_model_dir(tmp_path) / "sub" / "helper.py").write_text("VALUE = 1\n")
    info = await world.tracking.log_model(world.run_id, tmp_path / "bundle", "bundle-model")
    loaded = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "helper.cpython-311.pyc").write_bytes(b"compiled elsewhere")
    (loaded / "sub" / "__pycache__").symlink_to(elsewhere, target_is_directory=True)

    again = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))

    assert not (again / "sub" / "__pycache__").exists()


async def test_pickles_load_only_when_allowed(world: World) -> None:
    info = await world.tracking.log_model(world.run_id, {"w": 1}, "pickled", flavor="pickle")

    with pytest.raises(UntrustedModelError) as raised:
        await world.tracking.load_model(info.model_uri, cache_dir=world.cache)

    assert raised.value.reason == "PICKLE_NOT_ALLOWED"
    assert "runs whatever code" in raised.value.message
    assert "allow_pickle=True" in raised.value.message
    assert not world.cache.exists()  # refused before any file was fetched
    loaded = await world.tracking.load_model(
        info.model_uri, allow_pickle=True, cache_dir=world.cache
    )
    assert loaded == {"w": 1}


async def test_cloudpickle_stores_what_pickle_cannot(world: World) -> None:
    offset = 3
    info = await world.tracking.log_model(
        world.run_id, lambda x: x + offset, "fn", flavor="cloudpickle"
    )
    with pytest.raises(UntrustedModelError):
        await world.tracking.load_model(info.model_uri, cache_dir=world.cache)
    loaded = await world.tracking.load_model(
        info.model_uri, allow_pickle=True, cache_dir=world.cache
    )
    assert loaded(4) == 7


async def test_the_manifest_records_what_the_model_was_saved_with(world: World) -> None:
    import json
    import platform

    import sklearn
    from sklearn.tree import DecisionTreeClassifier

    info = await world.tracking.log_model(
        world.run_id,
        DecisionTreeClassifier().fit([[0], [1]], [0, 1]),
        "tree",
        metadata={"owner": "ds-team"},
        signature={"inputs": "x"},
    )
    manifest = json.loads(await world.store.read(f"{_store_path(info.artifact_uri)}/{MANIFEST}"))
    assert manifest["flavor"] == "sklearn"
    assert manifest["python_version"] == platform.python_version()
    assert manifest["libraries"]["scikit-learn"] == sklearn.__version__
    assert manifest["files"] == {
        "model.pkl": {
            "sha256": info.files["model.pkl"],
            "size": manifest["files"]["model.pkl"]["size"],
        }
    }
    assert (manifest["metadata"], manifest["signature"]) == ({"owner": "ds-team"}, {"inputs": "x"})
    assert (manifest["run_id"], manifest["artifact_path"]) == (world.run_id, "tree")


async def test_a_registered_version_loads_only_the_model_it_was_registered_with(
    world: World, unique: str
) -> None:
    """The files of a registered version's source are replaced by another model's,
    consistent with its own manifest: the registry pins the version (and its copy) to
    the first one's manifest, and loads through them refuse the second."""
    name, copy = f"pinned-{unique}", f"pinned-copy-{unique}"
    info = await world.tracking.log_model(
        world.run_id, {"v": "registered"}, "model", flavor="pickle", registered_model_name=name
    )
    await world.registry.copy_model_version(f"models:/{name}/1", copy)
    # As docs/models.md tells, to log at a path again.
    await world.store.delete(_store_path(info.artifact_uri), recursive=True)
    await world.tracking.log_model(world.run_id, {"v": "other"}, "model", flavor="pickle")
    for uri in (f"models:/{name}/1", f"models:/{copy}/1"):
        with pytest.raises(DataLossError) as raised:
            await world.tracking.load_model(uri, allow_pickle=True, cache_dir=world.cache)
        assert raised.value.reason == "CHECKSUM_MISMATCH"
        assert raised.value.metadata["expected_sha256"] == info.manifest_sha256
        with pytest.raises(DataLossError):
            await world.tracking.download_artifacts(uri, world.cache.parent / "dst")


async def test_copies_of_copies_load_the_original_files_however_deep(world: World, unique: str):
    """A copy points at its original's files, not through it by name: copies of copies
    stay one hop from the files, and survive the original's rename."""
    names = [f"chain-{unique}-{i}" for i in range(MAX_HOPS + 3)]
    await world.tracking.log_model(
        world.run_id, {"v": "original"}, "model", flavor="pickle", registered_model_name=names[0]
    )
    for before, after in itertools.pairwise(names):
        await world.registry.copy_model_version(f"models:/{before}/1", after)
    await world.registry.rename_registered_model(names[0], f"renamed-{unique}")
    # Another model under the original's name, which the first copy's source names.
    await world.tracking.log_model(
        await world.new_run(),
        {"v": "other"},
        "model",
        flavor="pickle",
        registered_model_name=names[0],
    )
    for name in names[1:]:
        loaded = await world.tracking.load_model(
            f"models:/{name}/1", allow_pickle=True, cache_dir=world.cache
        )
        assert loaded == {"v": "original"}, name
    copied = await world.registry.get_model_version(names[-1], 1)
    assert copied.source == f"models:/{names[-2]}/1"  # MLflow's source of a copy


async def test_a_copy_of_a_version_sourced_by_an_alias_keeps_the_model_it_was_copied_with(
    world: World, unique: str
) -> None:
    """A version whose source is models:/x@champ: its copy pointed at that URI, so it
    loaded x's version 2 once the alias moved there, not the model copied."""
    x, y, z = (f"{n}-{unique}" for n in "xyz")
    for value in ("A", "B"):
        await world.tracking.log_model(
            await world.new_run(), [value], "model", flavor="pickle", registered_model_name=x
        )
    await world.registry.set_registered_model_alias(x, "champ", 1)
    await world.registry.create_registered_model(y)
    await world.registry.create_model_version(y, f"models:/{x}@champ")
    await world.registry.copy_model_version(f"models:/{y}/1", z)

    await world.registry.set_registered_model_alias(x, "champ", 2)
    loaded = await world.tracking.load_model(
        f"models:/{z}/1", allow_pickle=True, cache_dir=world.cache
    )
    assert loaded == ["A"]
    # Pinned to the model copied, as a load through the alias was (by x's version 1).
    pinned = (await world.registry.get_model_version(x, 1)).tags[MANIFEST_TAG]
    assert (await world.registry.get_model_version(z, 1)).tags[MANIFEST_TAG] == pinned
