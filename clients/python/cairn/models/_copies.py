"""Copies of a cached model for people to keep, each landing whole or not at all.

The cache's entries are shared and read-only (_cache); `download_artifacts` and
`ModelManager.get_model(download_file=True)` hand out copies of their own. A copy is
made in a temporary folder inside the destination's folder (the same file system, so
moving it is a rename), each file's size checked; only then does anything at the
destination change: the whole folder is renamed into place, or, over an earlier copy,
file by file with the manifest last. A directory with a manifest is complete
(_manifest), so a copy cut short by a full disk never looks like a model, and an earlier
good copy is replaced only by a whole new one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from .._clients._local_files import local_writes
from ._manifest import MANIFEST, Manifest
from ._paths import inside


def copy_model(
    entry: Path, manifest: Manifest, manifest_bytes: bytes, target: Path, where: str
) -> Path:
    """The model's files and its manifest (manifest_bytes, as the store holds it) as the
    directory target; returns target.

    Raises:
        FailedPreconditionError: (LOCAL_WRITE_FAILED) target could not be written.
    """
    with writing(target), _staging(target.parent) as staging:
        _stage(entry, manifest, staging, where)
        (staging / MANIFEST).write_bytes(manifest_bytes)
        if not target.exists():
            with contextlib.suppress(OSError):  # made meanwhile: moved in file by file
                staging.rename(target)
                return target
        target.mkdir(exist_ok=True)
        _move_in(staging, manifest.files, target, where, with_manifest=True)
    return target


def copy_files(entry: Path, manifest: Manifest, target: Path, where: str) -> Path:
    """The model's files (not its manifest) into the directory target; returns the one
    file or directory at their top (Devo's model file), else target.

    Raises:
        FailedPreconditionError: (LOCAL_WRITE_FAILED) target could not be written.
    """
    with writing(target), _staging(target) as staging:
        _stage(entry, manifest, staging, where)
        _move_in(staging, manifest.files, target, where)
    tops = {relative.split("/", 1)[0] for relative in manifest.files}
    return target / tops.pop() if len(tops) == 1 else target


def writing(target: Path) -> contextlib.AbstractContextManager[None]:
    """Turns the file system's refusals (full, read-only, not ours) into a CairnError
    (LOCAL_WRITE_FAILED; see `local_writes`)."""
    return local_writes(target, "nothing of it was kept, and an earlier copy is as it was")


@contextlib.contextmanager
def _staging(folder: Path) -> Iterator[Path]:
    """A temporary folder in folder, removed at the end unless it was moved away."""
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".cairn-{uuid.uuid4().hex}.part"
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _stage(entry: Path, manifest: Manifest, staging: Path, where: str) -> None:
    """Copies each file (bytes only: the cache's read-only mode stays behind) and checks
    it is whole."""
    for relative, expected in manifest.files.items():
        copy = inside(staging, relative, where)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(inside(entry, relative, where), copy)
        if (size := copy.stat().st_size) != expected.size:
            raise OSError(errno.EIO, f"copied {size} of {expected.size} bytes", str(copy))


def _move_in(
    staging: Path, relatives: Iterable[str], target: Path, where: str, with_manifest: bool = False
) -> None:
    """Renames the staged files over target's; with_manifest, target's manifest goes
    first (no model while its files change) and the staged one comes last. Folders are
    made and names checked for all of them beforehand, so the renames, which cannot fail
    for want of space, are all that is left when the first one happens."""
    moves = [(staging / relative, inside(target, relative, where)) for relative in relatives]
    if with_manifest:
        moves.append((staging / MANIFEST, target / MANIFEST))
    for _, destination in moves:
        destination.parent.mkdir(parents=True, exist_ok=True)
        if destination.is_dir() and not destination.is_symlink():
            raise IsADirectoryError(errno.EISDIR, "a folder has the file's name", str(destination))
    if with_manifest:
        (target / MANIFEST).unlink(missing_ok=True)
    for source, destination in moves:
        os.replace(source, destination)
