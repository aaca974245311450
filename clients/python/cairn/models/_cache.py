"""The local cache of downloaded models, keyed by the sha256 of their manifest.

A manifest holds the sha256 of every file, so its own sha256 names the model's exact
content: two URIs that resolve to the same files share one entry, and an entry, once
complete, never needs fetching again. An entry is filled in a temporary folder beside
it, each file checked against the manifest, then renamed into place: a reader sees a
whole verified model or none.

An entry is shared by every load on the machine, and `load_model` of a "files" model
hands out a path inside it, so it is guarded against edits: its files are made
read-only when it is put in place, and its manifest, written last, dates the moment it
was verified. A file changed since then has a change time (ctime, which no one can set
back) or a modification time at or after the manifest's, so a lookup hashes it again,
and an entry whose file no longer has its sha256 is dropped and fetched anew: an edit
costs a download, and is never served as the model (an entry that cannot be moved aside
is refused with an error instead). Files untouched since cost a stat. A cache this
process may read but not change (a read-only volume, another user's) is served all the
same, its changed-looking files hashed once by each process (`_remember`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from .._clients._local_files import check_written
from ..exceptions import FailedPreconditionError
from ._manifest import MANIFEST, FileEntry, Manifest, holds
from ._paths import is_kind, relative_path

CACHE_ENV = "CAIRN_MODEL_CACHE"
_WRITE = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
# A file system's clock moves in ticks (Linux: 1-10 ms; FAT: 2 s): the seal waits for
# the next tick this long at most, then leaves the files to be hashed on the next lookup.
_TICK_WAIT_SECONDS = 0.05
# Files this process verified in entries it could not seal (a read-only cache), by
# `_identity`: hashed once a process rather than at every lookup.
_VERIFIED: dict[tuple[int, ...], FileEntry] = {}
_VERIFIED_MAX = 100_000
_SETTLED_NS = 2_000_000_000  # FAT's clock tick, the coarsest
# An entry (the sha256 of its manifest), one being filled (`_scratch`), one dropped (`_drop`).
_ENTRY_NAME = re.compile(r"[0-9a-f]{64}|\.[0-9a-f]{64}\.[0-9a-f]{32}\.(part|stale)")


def default_cache_dir() -> Path:
    """$CAIRN_MODEL_CACHE, else $XDG_CACHE_HOME/cairn/models, else ~/.cache/cairn/models."""
    if configured := os.environ.get(CACHE_ENV):
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cairn" / "models"


def refuse_download_into(
    target: Path, cache_dir: str | os.PathLike[str] | None, where: str
) -> None:
    """Raises when target is in an entry of the model cache (cache_dir, else the
    default), or in one being filled or dropped: a download written there would be
    taken for an edit and dropped, with the entry, on the next load. The rest of the
    cache's folder is the user's; so is everything when the default cache has no place
    (no home directory), and no entry to keep.

    Raises:
        FailedPreconditionError: LOCAL_PATH_CONFLICT, metadata path and cache_dir.
    """
    try:
        root = Path(os.path.realpath(ModelCache(cache_dir).root))
    except RuntimeError:  # Path.home(): no home directory
        return
    resolved = Path(os.path.realpath(target))  # a link loop, unlike resolve(), is no error
    within = resolved.relative_to(root).parts if resolved.is_relative_to(root) else ()
    if within and _ENTRY_NAME.fullmatch(within[0]):
        raise FailedPreconditionError(
            f"{where}: {target} is in the model cache entry {root / within[0]}, which is "
            "dropped when changed; download somewhere else",
            reason="LOCAL_PATH_CONFLICT",
            metadata={"path": str(target), "cache_dir": str(root)},
        )


def _holds_only(entry: Path, manifest: Manifest) -> bool:
    """Whether entry holds the manifest's files, their folders and the manifest, and no
    other file, folder or link (the folders of an entry stay writable), but for what
    Python writes when it imports a module of the entry (`_python_wrote`): its own
    cache of the model's code (a model shipping code would otherwise be fetched again
    on every load once imported, and dropped under the running code)."""
    expected = {MANIFEST, *manifest.files}
    expected |= {str(parent) for name in manifest.files for parent in PurePosixPath(name).parents}
    try:
        found = {path.relative_to(entry).as_posix() for path in entry.rglob("*")}
    except OSError:
        return False
    return all(_python_wrote(entry, relative, manifest) for relative in found - expected)


# What Python writes importing <module>.py: __pycache__/<module>.<tag>[.opt-N].pyc, by
# way of a temporary <that name>.<number> it renames.
_COMPILED = re.compile(r"(?P<module>[^./]+)\.[^/]+\.pyc(\.[0-9]+)?")


def _python_wrote(entry: Path, relative: str, manifest: Manifest) -> bool:
    """Whether relative is a __pycache__ folder, or a file in one, that Python writes
    beside a module the manifest names: a folder or a file, never a link (which Python
    would follow out of the entry, where nothing is checked). Python trusts such a file
    by the time and size of its source, which it records, so a forged one is not told
    apart (docs/models.md); any other file there is."""
    path = PurePosixPath(relative)
    if path.name == _PYCACHE:
        wrote = any(PurePosixPath(name).parent == path.parent for name in manifest.files)
        return wrote and is_kind(entry / relative, stat.S_ISDIR)
    return compiled_module(path, manifest) and is_kind(entry / relative, stat.S_ISREG)


def compiled_module(path: PurePosixPath, manifest: Manifest) -> bool:
    """Whether path is where Python writes a compiled module the manifest names."""
    compiled = _COMPILED.fullmatch(path.name)
    return (
        compiled is not None
        and path.parent.name == _PYCACHE
        and str(path.parent.parent / f"{compiled['module']}.py") in manifest.files
    )


_PYCACHE = "__pycache__"


class ModelCache:
    """Entries `<root>/<manifest sha256>/`, each a model directory with its manifest."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    @staticmethod
    def key(manifest_bytes: bytes) -> str:
        return hashlib.sha256(manifest_bytes).hexdigest()

    def lookup(self, key: str, manifest: Manifest) -> Path | None:
        """The entry, when it holds the manifest's files and nothing else, and each still
        has the manifest's size and, when it changed since the entry was sealed, its
        sha256 (blocking: run it in a thread). An entry that fails is dropped: one
        holding a file more (a loader would read a config added beside the model's) too.
        Bytecode the model shipped is not checked: Python rewrites it in the entry as it
        imports the model's code (a copy takes it from the store: model_fetches).

        Raises:
            FailedPreconditionError: LOCAL_WRITE_FAILED, an entry that fails and cannot be
                dropped (`_drop`).
        """
        entry = self.root / key
        if not is_kind(entry, stat.S_ISDIR):  # a link too: to a folder nothing guards
            if os.path.lexists(entry):
                _drop(entry)
            return None
        try:
            sealed = (entry / MANIFEST).stat().st_mtime_ns
        except OSError:
            return None
        if not _holds_only(entry, manifest):
            _drop(entry)
            return None
        changed, writable, folders = [], [], set[PurePosixPath]()
        for relative, expected in manifest.files.items():
            file = entry / relative_path(relative, str(entry))
            if compiled_module(PurePosixPath(relative), manifest) and is_kind(file, stat.S_ISREG):
                # Shipped with the model, and stale to the Python that imports it (the
                # sources are as old as their download): rewritten, as one it wrote.
                continue
            found = _stat(file) if _in_folders(entry, relative, folders) else None
            if found is None or found.st_size != expected.size:
                _drop(entry)
                return None
            if max(found.st_mtime_ns, found.st_ctime_ns) >= sealed:
                if _VERIFIED.get(_identity(found)) != expected:
                    changed.append((file, expected, found))
            elif found.st_mode & _WRITE:  # filled by an older client: as verified
                writable.append(file)
        if not all(holds(file, expected) for file, expected, _ in changed):
            _drop(entry)
            return None
        if changed or writable:  # unchanged after all (touched, or sealed within a tick)
            try:
                _seal([*(file for file, _, _ in changed), *writable], entry / MANIFEST)
            except OSError:
                # Verified already: a cache this process may read but not change (a
                # read-only volume, a copied cache, another user's) is served as it is.
                _remember((found, expected) for _, expected, found in changed)
        return entry

    @contextlib.asynccontextmanager
    async def filling(
        self, key: str, manifest_bytes: bytes, manifest: Manifest
    ) -> AsyncIterator[Path]:
        """A temporary folder to fill with the model's files; when the block ends without
        error they are sealed (read-only, then the manifest written) and the folder
        becomes the entry. The file system's work runs in a thread, off the caller's
        event loop (sealing many files takes a while).

        Raises (at the block's end):
            FailedPreconditionError: LOCAL_WRITE_FAILED, an entry already there that
                fails `lookup` and cannot be moved aside.
            OSError: the file system refused to seal or place the entry.
        """
        scratch = await asyncio.to_thread(self._scratch, key)
        try:
            yield scratch
            await _to_the_end(self._put, scratch, key, manifest_bytes, manifest)
        finally:
            await asyncio.to_thread(remove, scratch)

    def _scratch(self, key: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        scratch = self.root / f".{key}.{uuid.uuid4().hex}.part"
        scratch.mkdir()
        return scratch

    def _put(self, scratch: Path, key: str, manifest_bytes: bytes, manifest: Manifest) -> None:
        """Seals scratch and renames it to the entry. When the entry exists already (a
        concurrent filler's, or one that could not be moved aside), that one is served
        only once it passes `lookup` too; else it is dropped for ours, and an edited
        entry that cannot be is refused. The files are checked first (`check_written`): two
        names the file system opens as one file leave one written over, though each was
        whole as it was fetched."""
        check_written(scratch, {relative: entry.size for relative, entry in manifest.files.items()})
        (scratch / MANIFEST).write_bytes(manifest_bytes)
        # The manifest's files, each checked as it was fetched: not a listing of scratch
        # by the rules of an upload, which a file stored before them may break.
        _seal([scratch / relative for relative in manifest.files], scratch / MANIFEST)
        entry = self.root / key
        try:
            scratch.rename(entry)
        except OSError:
            if self.lookup(key, manifest) is not None:
                return
            # Not servable, and no lookup drops it (no manifest: a folder left by hand).
            _drop(entry)
            scratch.rename(entry)


async def _to_the_end(function: Callable[..., None], *args: Any) -> None:
    """function(*args) in a thread, waited for to its end even by a caller cancelled
    meanwhile: a thread cannot be stopped, and removing a scratch folder that is being
    sealed and renamed could put a part of it in place."""
    running = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        await asyncio.shield(running)
    except asyncio.CancelledError:
        await asyncio.wait([running])
        raise


def remove(path: Path) -> None:
    """Deletes a folder with read-only files (which Windows will not delete as they are),
    or what is there in its place (a link, a file)."""
    if not is_kind(path, stat.S_ISDIR):
        with contextlib.suppress(OSError):
            path.unlink()
        return
    if os.name == "nt":
        for file in path.rglob("*"):
            with contextlib.suppress(OSError):
                file.chmod(stat.S_IREAD | stat.S_IWRITE)
    shutil.rmtree(path, ignore_errors=True)


def _identity(found: os.stat_result) -> tuple[int, ...]:
    """What changes with any change of a file: a write moves its ctime, a replacement its
    inode."""
    return found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns


def _remember(verified: Iterable[tuple[os.stat_result, FileEntry]]) -> None:
    """Keeps files hashed in an entry that could not be sealed, by their stat before the
    hash, so that this process hashes them once, not at every lookup. Only a file whose
    last change is older than any file system's clock tick: a change after the hash then
    shows as another ctime."""
    if len(_VERIFIED) > _VERIFIED_MAX:
        _VERIFIED.clear()
    settled = time.time_ns() - _SETTLED_NS
    for found, expected in verified:
        if max(found.st_mtime_ns, found.st_ctime_ns) < settled:
            _VERIFIED[_identity(found)] = expected


def _in_folders(entry: Path, relative: str, checked: set[PurePosixPath]) -> bool:
    """Whether each folder above relative in entry is a folder, not a link, each looked
    at once a lookup (checked: those found so)."""
    for folder in PurePosixPath(relative).parents[:-1]:  # all but "."
        if folder not in checked:
            if not is_kind(entry / folder, stat.S_ISDIR):
                return False
            checked.add(folder)
    return True


def _stat(file: Path) -> os.stat_result | None:
    """The file's own stat, or None when it is missing, no regular file, or a link: a
    file replaced by a link to another (of the same size, changed before the entry was
    sealed) was served as the model's, and one to a file outside the entry stopped every
    load of it (so did a folder made a link, see `_in_folders`)."""
    try:
        found = file.lstat()
    except OSError:
        return None
    return found if stat.S_ISREG(found.st_mode) else None


def _drop(entry: Path) -> None:
    """Takes the entry out of view at once (a rename), then deletes it.

    Raises:
        FailedPreconditionError: LOCAL_WRITE_FAILED, the entry stays (on Windows a folder
            holding a file some program has open cannot be renamed): it is never served.
    """
    aside = entry.with_name(f".{entry.name}.{uuid.uuid4().hex}.stale")
    try:
        entry.rename(aside)
    except FileNotFoundError:  # dropped meanwhile by another loader
        return
    except OSError as error:
        raise _in_use(entry, error) from error
    remove(aside)


def _in_use(entry: Path, error: OSError) -> FailedPreconditionError:
    code = errno.errorcode.get(error.errno, "") if isinstance(error.errno, int) else ""
    return FailedPreconditionError(
        f"the model cache entry {entry} no longer holds the model's files and cannot be "
        f"replaced ({error.strerror or error}; on Windows, a program has one of its files "
        "open): it is not served; close what holds it, or delete it, and load again",
        reason="LOCAL_WRITE_FAILED",
        metadata={"path": str(entry), "errno": code},
    )


def _seal(files: Iterable[Path], manifest: Path) -> None:
    """Makes files and manifest read-only, then gives the manifest a modification time
    later than any time of the files: whatever changes a file after this shows in its
    own times."""
    newest = 0
    for file in files:
        newest = max(newest, *_read_only(file))
    _read_only(manifest)
    deadline = time.monotonic() + _TICK_WAIT_SECONDS
    while manifest.stat().st_mtime_ns <= newest and time.monotonic() < deadline:
        time.sleep(0.001)
        os.utime(manifest)  # now, by the file system's own clock


def _read_only(file: Path) -> tuple[int, int]:
    """Drops the file's write permissions (only when it has some: a chmod moves the
    ctime); returns its mtime and ctime."""
    found = file.stat()
    if found.st_mode & _WRITE:
        file.chmod(stat.S_IMODE(found.st_mode) & ~_WRITE)
        found = file.stat()
    return found.st_mtime_ns, found.st_ctime_ns
