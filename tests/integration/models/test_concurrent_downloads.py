"""Two downloads of different models into one destination at once, over an earlier
download: the second waits for the first to finish moving its files in, so the
destination ends as one whole model (the later), never one model's manifest over a mix
of both's files."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import cairn
from cairn.exceptions import FailedPreconditionError
from cairn.models import MANIFEST
from cairn.models._copies import _moving_into
from cairn.models._manifest import Manifest
from tests.integration.models.conftest import World

# How long the second download is given to finish while the first holds the folder:
# the old code finished it in a few milliseconds, then let the first go on over it.
HELD_FOR = 1.0


def _model(root: Path, content: bytes) -> Path:
    root.mkdir(parents=True)
    for name in ("a.bin", "b.bin", "z.bin"):
        (root / name).write_bytes(content + name.encode())
    return root


def _whole(model: Path) -> None:
    """Asserts each file the model directory's manifest names holds what it says."""
    manifest = Manifest.from_json((model / MANIFEST).read_bytes(), str(model))
    for relative, expected in manifest.files.items():
        assert hashlib.sha256((model / relative).read_bytes()).hexdigest() == expected.sha256


async def test_a_download_waits_for_another_into_the_same_folder(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uris = []
    for content in (b"earlier", b"first", b"second"):
        logged = await world.tracking.log_model(
            await world.new_run(), _model(tmp_path / content.decode() / "model", content), "m"
        )
        await world.tracking.load_model(logged.model_uri, cache_dir=world.cache)
        uris.append(logged.model_uri)
    earlier, first, second = uris
    dst = tmp_path / "dst"
    target = Path(await world.tracking.download_artifacts(earlier, dst, cache_dir=world.cache))

    await _second_waits_while_first_moves_in(
        monkeypatch,
        target / "model",
        lambda: world.tracking.download_artifacts(first, dst, cache_dir=world.cache),
        lambda: world.tracking.download_artifacts(second, dst, cache_dir=world.cache),
    )

    _whole(target)
    assert (target / "model" / "a.bin").read_bytes() == b"seconda.bin"
    assert sorted(p.name for p in dst.iterdir()) == [target.name]


async def test_a_download_of_files_waits_for_another_into_the_same_folder(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unique: str
) -> None:
    """get_model(download_file=True) moves a model's files into its download path, as
    Devo does: two models whose files share names, moved in at once, left a mix."""
    names = [f"{content}-{unique}" for content in ("first", "second")]
    for name in names:
        model = _model(tmp_path / name / "model", name.encode())
        logged = await world.tracking.log_model(
            await world.new_run(), model, "m", registered_model_name=name
        )
        await world.tracking.load_model(logged.model_uri, cache_dir=world.cache)
    manager = cairn.ModelManager(world.registry, tmp_path / "devo", cache_dir=world.cache)

    folder = tmp_path / "devo" / "model"
    await _second_waits_while_first_moves_in(
        monkeypatch,
        folder,
        lambda: manager.get_model(names[0], download_file=True),
        lambda: manager.get_model(names[1], download_file=True),
    )

    assert {(folder / f).read_bytes() for f in ("a.bin", "b.bin", "z.bin")} == {
        names[1].encode() + f.encode() for f in ("a.bin", "b.bin", "z.bin")
    }


async def _second_waits_while_first_moves_in(
    monkeypatch: pytest.MonkeyPatch,
    into: Path,
    first: Callable[[], Coroutine[Any, Any, object]],
    second: Callable[[], Coroutine[Any, Any, object]],
) -> None:
    """Holds the first download once it has moved a file into `into`, starts the second
    and asserts it does not finish meanwhile; then lets both finish."""
    moved_in, let_go = threading.Event(), threading.Event()
    replace = os.replace

    def stopping_once(source: Any, destination: Any) -> None:
        replace(source, destination)
        in_place = Path(destination).parent == into and ".part" in str(source)
        if in_place and not moved_in.is_set():
            moved_in.set()
            let_go.wait()

    monkeypatch.setattr(os, "replace", stopping_once)
    first_download = asyncio.create_task(first())
    try:
        assert await asyncio.to_thread(moved_in.wait, 30), "the first never moved a file in"
        second_download = asyncio.create_task(second())
        finished, _ = await asyncio.wait({second_download}, timeout=HELD_FOR)
        assert not finished, "the second download moved in while the first was moving in"
    finally:
        let_go.set()
    await first_download
    await second_download


async def test_a_folder_that_cannot_be_locked_still_takes_a_download(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On NFS an exclusive flock needs the file open for writing, which a folder is not
    (EBADF): the download goes on unlocked instead of failing."""
    logged = await world.tracking.log_model(world.run_id, _model(tmp_path / "model", b"1"), "m")

    def refused(fd: int, operation: int) -> None:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    monkeypatch.setattr(fcntl, "flock", refused)
    target = Path(await world.tracking.download_artifacts(logged.model_uri, tmp_path / "dst"))
    _whole(target)


def test_a_child_forked_during_a_copy_does_not_keep_the_folder(tmp_path: Path) -> None:
    """A child forked while a copy held the folder (a data loader starting its workers
    as a thread downloads) shares the lock; it was let go of by closing the copy's
    descriptor, which left it held by the child, and every later download into the
    folder waited for that child to exit."""
    stay, go = os.pipe()
    with _moving_into(tmp_path):
        child = os.fork()
        if child == 0:  # holds on until the parent has looked
            os.close(go)
            os.read(stay, 1)
            os._exit(0)
    os.close(stay)
    try:
        probe = os.open(tmp_path, os.O_RDONLY)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if kept
        finally:
            os.close(probe)
    finally:
        os.close(go)
        assert os.waitpid(child, 0)[1] == 0


async def test_a_download_over_an_earlier_leaves_none_of_its_files_the_later_lacks(
    world: World, tmp_path: Path
) -> None:
    """Version 1 had extra.cfg, version 2 none: downloaded over version 1, version 2's
    manifest stood over its own files and version 1's extra.cfg, which a loader reads."""
    earlier = _model(tmp_path / "v1" / "model", b"v1")
    (earlier / "extra.cfg").write_text("layers = 99")
    later = _model(tmp_path / "v2" / "model", b"v2")
    uris = [
        (await world.tracking.log_model(await world.new_run(), model, "m")).model_uri
        for model in (earlier, later)
    ]
    dst = tmp_path / "dst"
    for uri in uris:
        target = Path(await world.tracking.download_artifacts(uri, dst, cache_dir=world.cache))

    _whole(target)
    assert sorted(p.name for p in (target / "model").iterdir()) == ["a.bin", "b.bin", "z.bin"]


def _shapes(root: Path) -> tuple[Path, Path]:
    """Two models of one directory "w": one holds the file w/x/a.txt, the other the
    file w/x."""
    in_folder, as_file = root / "folder" / "w", root / "file" / "w"
    (in_folder / "x").mkdir(parents=True)
    (in_folder / "x" / "a.txt").write_text("in a folder")
    as_file.mkdir(parents=True)
    (as_file / "x").write_text("a file now")
    return in_folder, as_file


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.mark.parametrize("order", ["folder-then-file", "file-then-folder"])
async def test_a_download_over_an_earlier_model_of_another_shape_replaces_it(
    world: World, tmp_path: Path, order: str
) -> None:
    """Where one model has a file and the other a folder of that name, the download of
    one over the other failed LOCAL_WRITE_FAILED ("a folder has the file's name", or
    "File exists" making the folder): the earlier files went aside only after the
    folders were checked and made."""
    in_folder, as_file = _shapes(tmp_path)
    uris = [
        (await world.tracking.log_model(await world.new_run(), model, "m")).model_uri
        for model in (in_folder, as_file)
    ]
    first, second = uris if order == "folder-then-file" else uris[::-1]
    dst = tmp_path / "dst"
    await world.tracking.download_artifacts(first, dst, cache_dir=world.cache)

    target = Path(await world.tracking.download_artifacts(second, dst, cache_dir=world.cache))

    _whole(target)
    files = ["w/x"] if order == "folder-then-file" else ["w/x", "w/x/a.txt"]
    assert _tree(target) == sorted([MANIFEST, "w", *files])


@pytest.mark.parametrize("order", ["folder-then-file", "file-then-folder"])
async def test_what_the_user_put_where_a_model_needs_room_is_a_path_conflict(
    world: World, tmp_path: Path, order: str
) -> None:
    """A file or folder of the user's where the model needs a folder or a file failed
    the download LOCAL_WRITE_FAILED, as if the disk had refused it; a directory
    download calls it LOCAL_PATH_CONFLICT and names it. The earlier download stays."""
    in_folder, as_file = _shapes(tmp_path)
    uri = (await world.tracking.log_model(await world.new_run(), in_folder, "m")).model_uri
    other = (await world.tracking.log_model(await world.new_run(), as_file, "m")).model_uri
    dst = tmp_path / "dst"
    target = Path(await world.tracking.download_artifacts(other, dst, cache_dir=world.cache))
    mine = target / "w" / "x"
    mine.unlink()  # the user's own now, not the earlier model's
    if order == "folder-then-file":
        mine.mkdir()
        (mine / "mine.txt").write_text("mine")
        uri = other
    else:
        mine.write_text("mine")
    before = _tree(target)

    with pytest.raises(FailedPreconditionError) as refused:
        await world.tracking.download_artifacts(uri, dst, cache_dir=world.cache)

    assert refused.value.reason == "LOCAL_PATH_CONFLICT"
    assert refused.value.metadata["local_path"] == str(mine)
    assert _tree(target) == before


@pytest.mark.parametrize("mine", ["the model's folder", "the destination"])
async def test_a_file_of_the_users_where_the_model_goes_is_a_path_conflict(
    world: World, tmp_path: Path, mine: str
) -> None:
    """A file where the model's folder goes failed LOCAL_WRITE_FAILED naming the manifest
    in it, as the earlier manifest was set aside first; one where the destination goes
    (`cairn models download -d afile`), naming a staging folder never made."""
    _, as_file = _shapes(tmp_path)
    uri = (await world.tracking.log_model(await world.new_run(), as_file, "m")).model_uri
    first = Path(await world.tracking.download_artifacts(uri, tmp_path / "first"))
    dst = tmp_path / "dst"
    if mine == "the model's folder":
        dst.mkdir()
        in_the_way = dst / first.name
    else:
        in_the_way = dst
    in_the_way.write_text("mine")

    with pytest.raises(FailedPreconditionError) as refused:
        await world.tracking.download_artifacts(uri, dst, cache_dir=world.cache)

    assert refused.value.reason == "LOCAL_PATH_CONFLICT", refused.value
    assert refused.value.metadata["local_path"] == str(in_the_way)
    assert in_the_way.read_text() == "mine"
    left = sorted(p.name for p in dst.iterdir()) if dst.is_dir() else []
    assert left == ([first.name] if mine == "the model's folder" else [])


async def test_a_folder_of_the_users_named_as_the_manifest_is_kept_and_in_the_way(
    world: World, tmp_path: Path
) -> None:
    """A folder the user made where the model's manifest goes was set aside with the
    earlier manifest, and removed with the staging folder, all it held too; before that
    change it was refused as a folder where a file goes."""
    _, as_file = _shapes(tmp_path)
    uri = (await world.tracking.log_model(await world.new_run(), as_file, "m")).model_uri
    dst = tmp_path / "dst"
    target = Path(await world.tracking.download_artifacts(uri, dst, cache_dir=world.cache))
    (target / MANIFEST).unlink()
    (target / MANIFEST).mkdir()
    (target / MANIFEST / "notes.txt").write_text("mine")
    before = _tree(target)

    with pytest.raises(FailedPreconditionError) as refused:
        await world.tracking.download_artifacts(uri, dst, cache_dir=world.cache)

    assert refused.value.reason == "LOCAL_PATH_CONFLICT"
    assert refused.value.metadata["local_path"] == str(target / MANIFEST)
    assert _tree(target) == before
    assert (target / MANIFEST / "notes.txt").read_text() == "mine"


async def test_a_file_the_model_manager_copied_where_a_folder_is_needed_is_a_path_conflict(
    world: World, tmp_path: Path
) -> None:
    """get_model(download_file=True) of a version whose folder has the name of a file an
    earlier version's copy left (ModelManager keeps no manifest of what it copied, so
    the file is taken as the user's) failed LOCAL_WRITE_FAILED ("File exists")."""
    in_folder, as_file = _shapes(tmp_path)
    manager = cairn.ModelManager(
        world.registry, download_path=tmp_path / "dst", cache_dir=world.cache
    )
    await manager.add_model("shapes", "X", as_file)
    await manager.get_model("shapes", download_file=True)
    await manager.add_model("shapes", "X", in_folder, force=True)

    with pytest.raises(FailedPreconditionError) as refused:
        await manager.get_model("shapes", download_file=True)

    assert refused.value.reason == "LOCAL_PATH_CONFLICT"
    assert refused.value.metadata["local_path"] == str(tmp_path / "dst" / "w" / "x")
    assert (tmp_path / "dst" / "w" / "x").read_text() == "a file now"


@pytest.mark.parametrize(
    "change",
    [
        "file-made-folder",
        "folder-made-file",
        "folder-removed",
        "odd-entry",
        "manifest-fifo",
        "file-edited",
    ],
)
async def test_what_the_user_changed_of_an_earlier_download_is_left_as_it_is(
    world: World, tmp_path: Path, change: str
) -> None:
    """Taking away the earlier model's files failed every later download where the user
    had made one of them a folder, or a folder of them a file; made folders the user had
    removed; read a FIFO at the manifest's name (forever) and any file there whole; and
    kept every earlier file when one name of the earlier manifest was odd (and raised
    a bare ValueError when one held a NUL); and deleted a file the later model lacks
    though the user had changed its content. The folders
    the earlier files leave empty go too (they stayed)."""
    earlier = _model(tmp_path / "v1" / "model", b"v1")
    (earlier / "extra.cfg").write_text("layers = 99")
    (earlier / "old" / "deep").mkdir(parents=True)
    (earlier / "old" / "deep" / "x").write_text("x")
    later = _model(tmp_path / "v2" / "model", b"v2")
    first, second = [
        (await world.tracking.log_model(await world.new_run(), model, "m")).model_uri
        for model in (earlier, later)
    ]
    dst = tmp_path / "dst"
    target = Path(await world.tracking.download_artifacts(first, dst, cache_dir=world.cache))
    model = target / "model"
    if change == "file-made-folder":
        (model / "extra.cfg").unlink()
        (model / "extra.cfg").mkdir()
        (model / "extra.cfg" / "mine.txt").write_text("mine")
    elif change in ("folder-made-file", "folder-removed"):
        shutil.rmtree(model / "old")
        if change == "folder-made-file":
            (model / "old").write_text("mine")
    elif change == "odd-entry":
        manifest = json.loads((target / MANIFEST).read_bytes())
        manifest["files"]["../../outside.txt"] = manifest["files"]["model/a.bin"]
        manifest["files"]["model/a\u0000.bin"] = manifest["files"]["model/a.bin"]
        (target / MANIFEST).write_text(json.dumps(manifest))
    elif change == "file-edited":
        (model / "extra.cfg").chmod(0o644)
        (model / "extra.cfg").write_text("layers = 12, tuned by hand")
    else:
        (target / MANIFEST).unlink()
        os.mkfifo(target / MANIFEST)

    download = world.tracking.download_artifacts(second, dst, cache_dir=world.cache)
    assert Path(await asyncio.wait_for(download, 60)) == target
    _whole(target)
    assert (model / "a.bin").read_bytes() == b"v2a.bin"
    if change == "file-made-folder":
        assert (model / "extra.cfg" / "mine.txt").read_text() == "mine"
    elif change == "folder-made-file":
        assert (model / "old").read_text() == "mine"
    elif change == "folder-removed":
        assert not (model / "old").exists()
    elif change == "odd-entry":
        assert not (model / "extra.cfg").exists()
        assert not (model / "old").exists()  # nor its folders, emptied
    elif change == "file-edited":
        assert (model / "extra.cfg").read_text() == "layers = 12, tuned by hand"
        assert not (model / "old").exists()


@pytest.mark.parametrize("made_a_link", ["folder", "file"])
async def test_a_link_the_user_made_in_a_download_is_never_written_through(
    world: World, tmp_path: Path, made_a_link: str
) -> None:
    """A later download over an earlier one whose folder or file the user had made a link
    out of the destination was DataLossError INVALID_MODEL_MANIFEST, "log the model
    again", the model being whole. A folder made a link is a local write failure, and
    nothing is written through it; a file made a link is replaced by the model's."""
    first, second = [
        (await world.tracking.log_model(await world.new_run(), model, "m")).model_uri
        for model in (_model(tmp_path / v / "model", v.encode()) for v in ("v1", "v2"))
    ]
    dst, elsewhere = tmp_path / "dst", _model(tmp_path / "elsewhere", b"mine")
    target = Path(await world.tracking.download_artifacts(first, dst, cache_dir=world.cache))
    mine = {path.name: path.read_bytes() for path in elsewhere.iterdir()}
    if made_a_link == "folder":
        shutil.rmtree(target / "model")
        (target / "model").symlink_to(elsewhere, target_is_directory=True)
        with pytest.raises(FailedPreconditionError) as refused:
            await world.tracking.download_artifacts(second, dst, cache_dir=world.cache)
        assert refused.value.reason == "LOCAL_WRITE_FAILED"
        assert refused.value.metadata["errno"] == "ELOOP"
    else:
        (target / "model" / "a.bin").unlink()
        (target / "model" / "a.bin").symlink_to(elsewhere / "a.bin")
        await world.tracking.download_artifacts(second, dst, cache_dir=world.cache)
        _whole(target)
        assert not (target / "model" / "a.bin").is_symlink()
    assert {path.name: path.read_bytes() for path in elsewhere.iterdir()} == mine


@pytest.mark.parametrize("earlier", [True, False])
async def test_a_models_folder_made_a_link_out_of_the_destination_is_not_written_through(
    world: World, tmp_path: Path, earlier: bool
) -> None:
    """dst/<name> itself a link (over an earlier download, or before the first): the
    model was written through it, over what the folder it leads to held, and the files
    of the earlier model the later lacks would have gone from there."""
    uris = [
        (await world.tracking.log_model(await world.new_run(), model, "m")).model_uri
        for model in (_model(tmp_path / v / "model", v.encode()) for v in ("v1", "v2"))
    ]
    dst, elsewhere = tmp_path / "dst", _model(tmp_path / "elsewhere", b"mine")
    target = dst / "m"
    if earlier:
        first = await world.tracking.download_artifacts(uris[0], dst, cache_dir=world.cache)
        assert Path(first) == target
        shutil.rmtree(target)
    else:
        dst.mkdir()
    mine = {path.name: path.read_bytes() for path in elsewhere.iterdir()}
    target.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(FailedPreconditionError) as refused:
        await world.tracking.download_artifacts(uris[1], dst, cache_dir=world.cache)
    assert (refused.value.reason, refused.value.metadata["errno"]) == (
        "LOCAL_WRITE_FAILED",
        "ELOOP",
    )
    assert {path.name: path.read_bytes() for path in elsewhere.iterdir()} == mine


async def test_a_folder_the_user_made_a_link_to_another_of_the_model_is_not_written_through(
    world: World, tmp_path: Path
) -> None:
    """model/b made a link to model/a (inside the destination): the download ended OK
    with b's bytes under a's name, a's under none, against the manifest."""
    uris = []
    for version in ("v1", "v2"):
        model = tmp_path / version / "model"
        for folder in ("a", "b"):
            (model / folder).mkdir(parents=True)
            (model / folder / "w.bin").write_bytes(f"{version}{folder}".encode())
        uris.append((await world.tracking.log_model(await world.new_run(), model, "m")).model_uri)
    dst = tmp_path / "dst"
    target = Path(await world.tracking.download_artifacts(uris[0], dst, cache_dir=world.cache))
    shutil.rmtree(target / "model" / "b")
    (target / "model" / "b").symlink_to("a", target_is_directory=True)
    with pytest.raises(FailedPreconditionError) as refused:
        await world.tracking.download_artifacts(uris[1], dst, cache_dir=world.cache)
    assert (refused.value.reason, refused.value.metadata["errno"]) == (
        "LOCAL_WRITE_FAILED",
        "ELOOP",
    )
    assert (target / "model" / "a" / "w.bin").read_bytes() == b"v1a"  # as it was
