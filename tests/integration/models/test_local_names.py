"""A local tree holding a file whose name is not UTF-8 (bytes a file system keeps and
Python reads as lone surrogates) is refused whole, before anything of it is stored,
by every call that uploads a tree: no artifact path can carry the name, and a tree
refused part-way would leave the files before it stored. So is one holding a name that
starts or ends with a character that shows as nothing, which the server refuses."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import cairn
from cairn import _object_paths as object_paths
from cairn.exceptions import InvalidArgumentError, NotFoundError
from tests.integration.models.conftest import World

NOT_UTF8 = os.fsdecode(b"b\xff.txt")  # "b\udcff.txt"
MODEL = "named-locally"

Upload = Callable[[World, Path], Awaitable[object]]


async def _upload_tree(world: World, tree: Path) -> object:
    return await world.store.upload_tree("tree", tree)


async def _log_artifacts(world: World, tree: Path) -> object:
    return await world.tracking.log_artifacts(world.run_id, tree, "tree")


async def _log_model(world: World, tree: Path) -> object:
    return await world.tracking.log_model(world.run_id, tree, "model", registered_model_name=MODEL)


async def _add_model(world: World, tree: Path) -> object:
    manager = cairn.ModelManager(world.registry, tree.parent / "downloads", cache_dir=world.cache)
    return await manager.add_model(MODEL, "files", tree)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """a.txt, the file of the name that is not text, and c.txt: one stored before it and
    one after, in path order."""
    root = tmp_path / "tree"
    root.mkdir()
    for name in ("a.txt", NOT_UTF8, "c.txt"):
        (root / name).write_text(name.encode(errors="surrogateescape").hex())
    return root


async def _stored(world: World) -> list[str]:
    return [info.path for info in await world.store.list("", recursive=True)]


# The four calls that upload a local tree, each a test's case.
every_upload = pytest.mark.parametrize(
    "upload",
    [_upload_tree, _log_artifacts, _log_model, _add_model],
    ids=lambda upload: upload.__name__.lstrip("_"),
)


@every_upload
async def test_a_name_that_is_not_text_refuses_the_whole_tree(
    world: World, tree: Path, upload: Upload
) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        await upload(world, tree)

    assert refused.value.reason == "INVALID_PATH"
    assert refused.value.metadata["path"].endswith("b\\udcff.txt")
    assert "not UTF-8" in str(refused.value)
    str(refused.value).encode()  # the message itself is printable text
    assert await _stored(world) == []
    with pytest.raises(NotFoundError):
        await world.registry.get_registered_model(MODEL)
    # Renamed, the same tree is taken whole.
    (tree / NOT_UTF8).rename(tree / "b.txt")
    await upload(world, tree)
    assert {path.rsplit("/", 1)[-1] for path in await _stored(world)} >= {
        "a.txt",
        "b.txt",
        "c.txt",
    }


@every_upload
async def test_a_name_starting_with_an_invisible_character_refuses_the_whole_tree(
    world: World, tree: Path, upload: Upload
) -> None:
    """The server refuses such a path (docs/artifacts.md), and the client checked only
    that names are UTF-8: the tree went up part-way, a.txt stored, and the upload of
    the name after it was refused."""
    (tree / NOT_UTF8).rename(tree / "\ufeffb.txt")

    with pytest.raises(InvalidArgumentError) as refused:
        await upload(world, tree)

    assert refused.value.reason == "INVALID_PATH"
    assert refused.value.metadata["path"].endswith("\\ufeffb.txt")
    assert "invisible character" in str(refused.value)
    assert await _stored(world) == []


LONG = "/".join(["d" * 200] * 6 + ["b.txt"])  # more than the server's 1,024 bytes


@every_upload
@pytest.mark.parametrize(
    ("name", "problem", "shown"),
    [
        ("b\\c.txt", "separator", "b\\c.txt"),  # a zip made on Windows, unpacked elsewhere
        ("b\tc.txt", "control characters", "b\\x09c.txt"),
        ("b\x7fc.txt", "control characters", "b\\x7fc.txt"),
        ("b\nc.txt", "control characters", "b\\x0ac.txt"),
        ("b\x85c.txt", "control characters", "b\\x85c.txt"),
        (LONG, "at most 1024 bytes", "b.txt"),
    ],
    ids=["backslash", "tab", "del", "newline", "c1", "long"],
)
async def test_a_name_the_server_refuses_refuses_the_whole_tree(
    world: World, tree: Path, upload: Upload, name: str, problem: str, shown: str
) -> None:
    """The client checked only UTF-8 and invisible ends: the tree went up part-way, a.txt
    stored, and the server refused the next file (INVALID_PATH), naming no local file.
    The name is shown escaped, on one line (a newline or a tab in it was kept as is)."""
    (tree / name).parent.mkdir(parents=True, exist_ok=True)
    (tree / NOT_UTF8).rename(tree / name)

    with pytest.raises(InvalidArgumentError) as refused:
        await upload(world, tree)

    assert refused.value.reason == "INVALID_PATH"
    assert refused.value.metadata["path"].endswith(f"/{shown}")
    assert problem in str(refused.value) and f"/{shown}" in str(refused.value)
    assert await _stored(world) == []


@every_upload
async def test_links_in_a_tree_are_taken_as_every_tree_upload_takes_them(
    world: World, tree: Path, upload: Upload
) -> None:
    """log_model and add_model copied a tree whole first (shutil.copytree): a dangling
    link raised a bare shutil.Error, a loop was walked some 40 levels deep, and a link to
    a folder was followed, which log_artifacts leaves out."""
    (tree / NOT_UTF8).rename(tree / "b.txt")
    outside = tree.parent / "outside"
    outside.mkdir()
    (outside / "o.txt").write_text("o")
    (tree / "dangling").symlink_to(tree.parent / "missing")
    (tree / "loop").symlink_to(tree)
    (tree / "folder").symlink_to(outside)
    (tree / "file").symlink_to(tree / "a.txt")

    await upload(world, tree)

    stored = await _stored(world)
    names = {path.rsplit("/", 1)[-1] for path in stored}
    assert {"a.txt", "b.txt", "c.txt", "file"} <= names
    assert not names & {"dangling", "o.txt"}
    assert not [path for path in stored if "/loop/" in path]


@pytest.mark.parametrize("name", ["w\u200b", "\ufeffdata.csv"])
async def test_a_model_stored_before_the_rule_of_invisible_ends_still_loads(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The cache sealed an entry's files as it listed them anew, by the rules of an
    upload: a files model holding a name stored before those rules refused it failed
    load_model and download_artifacts with INVALID_PATH, naming the cache's scratch
    folder, "(nothing of the tree was sent)". Reads take any stored path."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / name).write_bytes(b"weights")

    def older(path: str) -> str | None:
        """The rule of paths before invisible ends were refused, client's and server's."""
        return object_paths.text_problem(path) or object_paths.segments_problem(path.split("/"))

    with monkeypatch.context() as before:
        before.setattr(object_paths, "new_object_problem", older)
        info = await world.tracking.log_model(world.run_id, bundle, "old-names")
    loaded = Path(await world.tracking.load_model(info.model_uri, cache_dir=world.cache))
    assert (loaded / name).read_bytes() == b"weights"
    fetched = Path(await world.tracking.download_artifacts(info.model_uri, tmp_path / "got"))
    assert (fetched / "bundle" / name).read_bytes() == b"weights"
