"""Copies of a cached model for people to keep, each landing whole or not at all.

The cache's entries are shared and read-only (_cache); `download_artifacts` and
`ModelManager.get_model(download_file=True)` hand out copies of their own. A copy is
made in a temporary folder inside the destination's folder (the same file system, so
moving it is a rename), each file's size checked; only then does anything at the
destination change: the whole folder is renamed into place, or, over an earlier copy,
file by file with the manifest last, each earlier file moved aside first and put back
when a rename fails (on Windows, over a file some program holds open). A directory with
a manifest is complete (_manifest), so a copy cut short by a full disk never looks like
a model, and an earlier good copy is replaced only by a whole new one. Copies into one
folder, from threads or processes, take their turns (`_moving_into`): the renames of
two interleaved would leave one's manifest over a mix of both's files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from .._clients._local_files import (
    check_above,
    check_room,
    check_written,
    local_writes,
    tree_files,
)
from ..exceptions import DataLossError, FailedPreconditionError
from ._manifest import MANIFEST, MAX_MANIFEST_BYTES, FileEntry, Manifest, holds
from ._paths import inside, is_kind, relative_path

if sys.platform != "win32":
    import fcntl


def copy_model(
    entry: Path,
    manifest: Manifest,
    manifest_bytes: bytes,
    target: Path,
    where: str,
    shipped: Mapping[str, Path | None] | None = None,
) -> Path:
    """The model's files and its manifest (manifest_bytes, as the store holds it) as the
    directory target, each from the cache entry but those `shipped` gives a file of
    (model_fetches.shipped_bytecode; those it gives None are checked as copied); returns
    target.

    Raises:
        FailedPreconditionError: (LOCAL_WRITE_FAILED) target could not be written;
            (LOCAL_PATH_CONFLICT) a file of the user's stands where target or a folder
            above it goes.
    """
    with writing(target):
        check_above(target.parent, where)
    with writing(target), _staging(target.parent) as staging:
        _stage(entry, manifest, staging, where, shipped or {})
        (staging / MANIFEST).write_bytes(manifest_bytes)
        with _moving_into(target.parent):
            _no_link(target, target.parent)
            if not target.exists():
                with contextlib.suppress(OSError):  # made meanwhile: moved in file by file
                    staging.rename(target)
                    return target
            _move_in(staging, manifest.files, target, where, with_manifest=True)
    return target


def _earlier_files(target: Path, kept: Iterable[str]) -> set[str]:
    """The files in target that the model copied there before names and the new model
    (of files kept) lacks, as that model left them: they go with it, or a loader would
    read them beside the new model's as its own. Read as leniently as the user may have
    changed it: no manifest (or none that is a regular file of a manifest's size, or
    JSON) names none; a name no model may hold is passed over, and so is a file the user
    changed (its bytes, or made it a link or a folder), or put under a folder made a
    link or a file: left where they are."""
    manifest = target / MANIFEST
    try:
        found = manifest.lstat()
        if not stat.S_ISREG(found.st_mode) or found.st_size > MAX_MANIFEST_BYTES:
            return set()
        files = json.loads(manifest.read_bytes()).get("files")
    except (OSError, ValueError, AttributeError):
        return set()
    if not isinstance(files, dict):
        return set()
    lacking = files.keys() - set(kept)
    return {relative for relative in lacking if _as_copied(target, relative, files[relative])}


def _as_copied(target: Path, relative: Any, described: Any) -> bool:
    """Whether relative, a file an earlier manifest names and describes so, is a path a
    model may hold, and a file in real folders of target with the size and sha256 the
    manifest gives it."""
    try:
        relative_path(relative, str(target))
    except DataLossError:
        return False
    place = PurePosixPath(relative)
    folders = (target / folder for folder in place.parents[:-1])  # all but "."
    if not all(is_kind(folder, stat.S_ISDIR) for folder in folders):
        return False
    if not isinstance(described, dict) or not is_kind(target / place, stat.S_ISREG):
        return False
    size, sha256 = described.get("size"), described.get("sha256")
    if not isinstance(size, int) or not isinstance(sha256, str):
        return False
    return holds(target / place, FileEntry(size, sha256))


def copy_files(
    entry: Path,
    manifest: Manifest,
    target: Path,
    where: str,
    shipped: Mapping[str, Path | None] | None = None,
) -> Path:
    """The model's files (not its manifest) into the directory target, as copy_model
    takes them; returns the one file or directory at their top (Devo's model file), else
    target.

    Raises:
        FailedPreconditionError: (LOCAL_WRITE_FAILED) target could not be written.
    """
    with writing(target), _staging(target) as staging:
        _stage(entry, manifest, staging, where, shipped or {})
        with _moving_into(target):
            _move_in(staging, manifest.files, target, where)
    tops = {relative.split("/", 1)[0] for relative in manifest.files}
    return target / tops.pop() if len(tops) == 1 else target


def writing(target: Path) -> contextlib.AbstractContextManager[None]:
    """Turns the file system's refusals (full, read-only, not ours) into a CairnError
    (LOCAL_WRITE_FAILED; see `local_writes`)."""
    return local_writes(target, "nothing of it was kept, and an earlier copy is as it was")


@contextlib.contextmanager
def _staging(folder: Path) -> Iterator[Path]:
    """A temporary folder in folder, removed at the end unless it was moved away; when
    the copy fails, the folders this copy made for it (folder and its missing parents)
    go too, for nothing of it is kept, but for one another copy has put something in."""
    made: list[Path] = []
    try:
        staging = _new_staging(folder, made)
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        for ours in made:  # innermost first
            try:
                ours.rmdir()
            except OSError:  # another copy's files are in it: it stays, as its parents
                break
        raise


# How often a copy makes its folders again when another copy, failing, removed one of
# them just after this one found it there.
STAGING_ATTEMPTS = 3


def _new_staging(folder: Path, made: list[Path]) -> Path:
    """A new temporary folder in folder, folder and its missing parents made first, those
    this copy made noted in made (innermost first)."""
    for _ in range(STAGING_ATTEMPTS - 1):
        with contextlib.suppress(FileNotFoundError):  # a folder removed under it
            return _staging_in(folder, made)
    return _staging_in(folder, made)


def _staging_in(folder: Path, made: list[Path]) -> Path:
    missing = [needed for needed in (folder, *folder.parents) if not needed.exists()]
    for needed in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another copy made it meanwhile
            needed.mkdir()
            made.insert(0, needed)
    staging = folder / f".cairn-{uuid.uuid4().hex}.part"
    staging.mkdir()
    return staging


@contextlib.contextmanager
def _moving_into(folder: Path) -> Iterator[None]:
    """Holds folder against every other copy moving into it until the end, waiting for
    the one that holds it: the folder a download was given, which a copy of a whole
    model makes its directory in and a copy of files (ModelManager) fills. Staging goes
    on unlocked. The lock is the folder's own (flock), so nothing is left in it, and the
    system lets it go with the process that held it. Where no folder can be locked
    (Windows; NFS, where an exclusive flock needs the file open for writing, which a
    folder never is; a folder that may be written in but not listed, whose open is
    refused), copies are not kept apart: the copy goes on unlocked, as before."""
    if sys.platform == "win32":
        yield
        return
    with contextlib.ExitStack() as held:
        with contextlib.suppress(OSError):
            folder_fd = os.open(folder, os.O_RDONLY)
            held.callback(os.close, folder_fd)
            fcntl.flock(folder_fd, fcntl.LOCK_EX)
            # Let go of explicitly, not by the close: a child forked meanwhile (a data
            # loader's workers) shares the lock, which closing here would leave it.
            held.callback(fcntl.flock, folder_fd, fcntl.LOCK_UN)
        yield


def _stage(
    entry: Path,
    manifest: Manifest,
    staging: Path,
    where: str,
    shipped: Mapping[str, Path | None],
) -> None:
    """Copies each file (bytes only: the cache's read-only mode stays behind), from the
    entry or where shipped has it, and checks it is whole; a compiled module shipped
    (one Python may write over in the entry at any time) by its sha256 too. The names
    are checked first, as a download's are (`tree_files`: the staging folder is on the
    destination's file system), and all the files again once copied (`check_written`)."""
    tree_files(staging, "", list(manifest.files))
    for relative, expected in manifest.files.items():
        copy = inside(staging, relative, where)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shipped.get(relative) or inside(entry, relative, where), copy)
        if (size := copy.stat().st_size) != expected.size:
            raise OSError(errno.EIO, f"copied {size} of {expected.size} bytes", str(copy))
        if relative in shipped and not holds(copy, expected):
            raise OSError(errno.EIO, "rewritten by Python as it was copied; copy again", str(copy))
    check_written(staging, {relative: entry.size for relative, entry in manifest.files.items()})


def _move_in(
    staging: Path, relatives: Iterable[str], target: Path, where: str, with_manifest: bool = False
) -> None:
    """Renames the staged files over target's; with_manifest, target's manifest goes
    aside first (no model while its files change), the files of the model it named that
    the new one lacks go aside too, with the folders they leave empty, and the staged
    manifest comes last. The earlier model's go before anything is checked or made, for
    the new model may need a folder where one of its files was, or the reverse. Then
    folders are made and names checked for all the new files, so the renames, which
    cannot fail for want of space, are all that is left when the first one happens; one
    can still fail (on Windows, over a file some program holds open): then all is put
    back as it was, and the folders made are removed.

    Raises:
        FailedPreconditionError: LOCAL_PATH_CONFLICT, what is in target that is not the
            earlier model's stands where the new model needs a folder or a file;
            LOCAL_WRITE_FAILED, a rename failed and the earlier files could not all be
            put back: target is left incomplete, and without its manifest.
    """
    relatives = list(relatives)
    moves: list[tuple[Path | None, Path]] = [
        (staging / relative, _destination(target, relative, where)) for relative in relatives
    ]
    earlier: list[tuple[Path | None, Path]] = []  # as they are: checked by _earlier_files
    gone: list[Path] = []
    if with_manifest:
        gone = [target / relative for relative in sorted(_earlier_files(target, relatives))]
        manifest = target / MANIFEST
        # A folder of that name is the user's, no manifest: left for check_room to refuse.
        if not (manifest.is_dir() and not manifest.is_symlink()):
            earlier.append((None, manifest))
        earlier += [(None, file) for file in gone]
        moves.append((staging / MANIFEST, manifest))
    aside = staging / f".earlier-{uuid.uuid4().hex}"
    aside.mkdir()
    moved: list[tuple[Path, Path | None]] = []  # a destination and its earlier file
    emptied: list[Path] = []
    made: list[Path] = []
    try:
        _swap(earlier, aside, moved)
        emptied = _remove_emptied(target, gone)
        destinations = [destination for _, destination in moves]
        check_room(target, [d.relative_to(target).as_posix() for d in destinations], destinations)
        _make_folders(target, [destination.parent for _, destination in moves], made)
        _swap(moves, aside, moved)
    except BaseException as error:
        stuck = _put_back(moved[len(earlier) :], [])
        for folder in reversed(made):
            with contextlib.suppress(OSError):  # not empty: what could not be put back
                folder.rmdir()
        for folder in reversed(emptied):  # outermost first
            with contextlib.suppress(OSError):
                folder.mkdir()
        stuck = _put_back(moved[: len(earlier)], stuck)
        if stuck:  # the folders made again for files that did not come back go again
            _remove_emptied(target, stuck)
        if stuck and isinstance(error, Exception):  # an interrupt goes on as it is
            raise _not_put_back(error, stuck, target) from error
        raise


def _remove_emptied(target: Path, gone: Iterable[Path]) -> list[Path]:
    """Removes the folders in target that the earlier model's files, gone, left empty,
    innermost first, and returns them; one that holds anything (the user's) stays."""
    removed: list[Path] = []
    for file in gone:
        for folder in file.parents:
            if folder == target or not folder.is_relative_to(target):
                break
            try:
                folder.rmdir()
            except OSError:  # not empty (or made something else meanwhile)
                break
            removed.append(folder)
    return removed


def _destination(target: Path, relative: str, where: str) -> Path:
    """Where relative, a file the manifest names, goes in target. A folder on the way
    that the user made a link is not written through: an OSError, which `writing`
    reports as the local write failure it is. One leading out of target was the
    manifest's INVALID_MODEL_MANIFEST ("log the model again"); one leading to another
    folder of the model made two of its files one, and the download ended OK with one
    file's bytes under the other's name. A file made a link is replaced, as any
    earlier file is (a rename never writes through it)."""
    path = target / relative_path(relative, where)
    for folder in (target / part for part in PurePosixPath(relative).parents[:-1]):
        _no_link(folder, target)
    return path


def _no_link(folder: Path, within: Path) -> None:
    """Refuses folder, one a download writes in, when it is a link, or leads out of
    within once resolved (a Windows junction is a folder to lstat): an OSError, which
    `writing` reports as the local write failure it is."""
    if is_kind(folder, stat.S_ISLNK) or not folder.resolve().is_relative_to(within.resolve()):
        raise OSError(
            errno.ELOOP,
            "a folder on the way is a link, which a download does not write through",
            str(folder),
        )


def _make_folders(target: Path, folders: Iterable[Path], made: list[Path]) -> None:
    """Makes target and the folders inside it that are missing, adding each to made
    (outermost first)."""
    checked: set[Path] = set()
    for folder in folders:
        for needed in [*reversed(folder.parents), folder]:
            if needed in checked or not needed.is_relative_to(target):
                continue
            checked.add(needed)
            if not needed.is_dir():
                needed.mkdir()
                made.append(needed)


def _swap(
    moves: list[tuple[Path | None, Path]], earlier: Path, moved: list[tuple[Path, Path | None]]
) -> None:
    """Each move's destination set aside into the folder earlier (when there is one),
    then its source renamed there (when it has one), each added to moved, for
    `_put_back` to undo when a rename fails."""
    for source, destination in moves:
        aside = earlier / str(len(moved))
        try:
            os.replace(destination, aside)
            moved.append((destination, aside))
        # Nothing there before; or a file of the user's where a folder on the way goes,
        # which check_room then refuses as in the way.
        except (FileNotFoundError, NotADirectoryError):
            moved.append((destination, None))
        if source is not None:
            try:
                os.replace(source, destination)
            except OSError as error:  # named by its destination: the source is ours, gone
                raise type(error)(error.errno, error.strerror, str(destination)) from error


def _put_back(moved: list[tuple[Path, Path | None]], stuck: list[Path]) -> list[Path]:
    """Undoes moved, last first: each new file removed, each earlier one renamed back;
    returns stuck with the files that could not be added. The manifest, set aside
    first, comes back only when all its files did: a copy that is not whole never looks
    complete."""
    stuck = list(stuck)
    for destination, aside in reversed(moved):
        if stuck and aside is not None and destination.name == MANIFEST:
            continue
        try:
            if aside is None:
                # Under a file of the user's (in the way): nothing of ours is there.
                with contextlib.suppress(NotADirectoryError):
                    destination.unlink(missing_ok=True)
            else:
                os.replace(aside, destination)
        except OSError:
            stuck.append(destination)
    return stuck


def _not_put_back(error: Exception, stuck: list[Path], target: Path) -> FailedPreconditionError:
    """What failed (a rename's OSError, or a refusal such as LOCAL_PATH_CONFLICT), and
    that the earlier copy is left incomplete."""
    number, path = getattr(error, "errno", None), getattr(error, "filename", None) or target
    code = errno.errorcode.get(number, "") if isinstance(number, int) else ""
    return FailedPreconditionError(
        f"could not write {path}: {getattr(error, 'strerror', None) or error}; and "
        f"{len(stuck)} file(s) of the earlier copy could not be put back ({stuck[0]}): "
        f"{target} is incomplete, without a manifest; download it again",
        reason="LOCAL_WRITE_FAILED",
        metadata={"path": str(path), "errno": code},
    )
