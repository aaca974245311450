"""The local side of a transfer: what an upload reads (a source) and the file a
download lands in."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import re
import shutil
import stat
import sys
import tempfile
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePath, PureWindowsPath
from typing import BinaryIO, NoReturn, TypeVar

from .. import _direct_io
from .. import _names as names
from .. import _object_paths as object_paths
from .._argument_error import invalid_argument
from .._direct_io import DirectWriter
from .._tables import on_one_line
from ..exceptions import CairnError, DataLossError, FailedPreconditionError, InvalidArgumentError

Source = str | os.PathLike[str] | bytes | BinaryIO
Local = TypeVar("Local", bound=PurePath)
# Characters no Windows file name holds; ":" would also name a drive ("C:", which wins
# a join) or an NTFS stream ("a.txt:x").
_NOT_ON_WINDOWS = frozenset('<>:"/\\|?*') | frozenset(map(chr, range(32)))
# Names Windows opens as devices, in any folder and with any extension ("NUL.txt").
_WINDOWS_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{n}" for port in ("COM", "LPT") for n in [*"123456789", "¹", "²", "³"]}
)
# Sources that can be read again from the start, and by position; a file object is
# read once, in order.
Resendable = (str, os.PathLike, bytes, bytearray, memoryview)
# What a tree's upload leaves when a file of it fails before any is sent.
NOTHING_SENT = "nothing of the tree was sent"
# What a model's files leave (log_model's files flavor, add_model) when one fails
# before they go up.
MODEL_NOT_SENT = "nothing of the model was sent"


@contextlib.contextmanager
def download_folder(dst_path: str | os.PathLike[str] | None) -> Iterator[Path]:
    """dst_path, or else a new temporary folder, as MLflow's download_artifacts makes,
    removed again when the download fails: each failed call left one behind."""
    if dst_path:
        yield Path(dst_path)
        return
    made = Path(tempfile.mkdtemp(prefix="cairn-"))
    try:
        yield made
    except BaseException:
        shutil.rmtree(made, ignore_errors=True)
        raise


def file_for(path: Path, size: int) -> BinaryIO | DirectWriter:
    """A new file to download into: large ones are written around the page cache."""
    if size >= _direct_io.BUFFER:
        return DirectWriter.create(path, exclusive=False)
    return path.open("wb")


@contextlib.contextmanager
def landing(target: Path) -> Iterator[Path]:
    """A new temporary file's path beside target, which becomes target when the body
    ends without error and is removed otherwise: a download's file is whole or not there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Of a bounded length, unlike one with the target's name in it: any name the file
    # system takes (255 bytes on ext4) has room for its temporary beside it.
    temporary = target.parent / f".cairn-{uuid.uuid4().hex}.part"
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        # A file that cannot be removed must not hide the error that ended the write.
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)


def check_length(path: Path, size: int) -> None:
    """Raises unless the file holds exactly the size received (a write that failed
    half-way must not leave a file the checksum was not computed over)."""
    length = path.stat().st_size
    if length != size:
        raise DataLossError(
            f"{path} holds {length} bytes, not the {size} received",
            reason="CHECKSUM_MISMATCH",
            metadata={"size": str(size), "stored_size": str(length)},
        )


def open_source(source: Source) -> tuple[BinaryIO, int | None, str, bool]:
    """A readable stream, its size when known, its sha256 when cheaply known, and
    whether this client opened it (and so closes it)."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        return io.BytesIO(data), len(data), hashlib.sha256(data).hexdigest(), True
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        return _NamedReads(io.FileIO(path)), path.stat().st_size, "", True
    return source, None, "", False


class _NamedReads(io.BufferedReader):
    """A file opened for reading whose failed reads name it (`reading`)."""

    def read(self, size: int | None = -1) -> bytes:
        with reading(self.name):
            return super().read(size)


@contextlib.contextmanager
def reading(file: str | os.PathLike[str]) -> Iterator[None]:
    """Names file in an OSError of a read of it, as a failed open does: a read's names
    no file (EIO of its disk, EINVAL of a file in /sys), so nothing told it apart from
    a connection's, and a tree's upload raised it bare (`local_reads` turns only what is
    about its file into LOCAL_READ_FAILED)."""
    try:
        yield
    except OSError as error:
        if error.filename is None:
            error.filename = os.fspath(file)
        raise


def check_source(source: Source) -> None:
    """Refuses what no upload can read, naming the argument: 5 raised AttributeError
    and a file opened in text mode hashlib's TypeError, once under way."""
    if isinstance(source, io.TextIOBase):
        raise invalid_argument("source", "is a file opened in text mode: open it with 'rb'")
    readable = callable(getattr(source, "read", None))
    if not (readable or isinstance(source, bytes | bytearray | memoryview | str | os.PathLike)):
        raise invalid_argument(
            "source", f"a {type(source).__name__} is no bytes, path or binary file object"
        )


def size_of(source: Source) -> int | None:
    """The size an upload will have, when known before reading it (not for a file
    object). A path to a pipe, socket or device is refused, naming the argument, as a
    tree's upload leaves them out: opening a pipe waited for a writer without end, and
    /dev/null was stored as an empty object. A directory is IsADirectoryError, which
    `upload` names as its argument and a tree's upload as a file it could not read."""
    if isinstance(source, bytes | bytearray | memoryview):
        return len(source)
    if isinstance(source, str | os.PathLike):
        found = Path(source).stat()
        if stat.S_ISDIR(found.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(source))
        if not stat.S_ISREG(found.st_mode):
            raise invalid_argument(
                "source", f"{os.fspath(source)!r} is a pipe, socket or device, not a file"
            )
        return found.st_size
    return None


def files_in(directory: Path, under: str = "") -> list[str]:
    """Every file's "/"-separated path under directory, in path order (blocking); all
    are checked before any is returned, so an upload of the tree to under stores all or
    none of them for this reason. A link to a file counts as that file; links to
    folders, dangling links, special files (FIFOs, sockets, devices) and this client's
    own temporary files (a killed download's `.cairn-<32 hex>.part`) are left out.

    Raises:
        InvalidArgumentError: INVALID_PATH, a name no upload can write: bytes that are
            not UTF-8, which a file system may hold and Python reads as lone surrogates
            ("\\udcff"), or one the server refuses as the path of a new object, joined
            to under (docs/artifacts.md): a backslash or a control character in it, a
            segment starting or ending with a character that shows as nothing, a path
            of more than 1,024 bytes.
        FailedPreconditionError: LOCAL_READ_FAILED, metadata path and errno: a folder
            that cannot be listed or a file that cannot be opened for reading.
    """
    relatives = sorted(file.relative_to(directory).as_posix() for file in _listed_files(directory))
    for relative in relatives:
        try:
            relative.encode()
        except UnicodeEncodeError:
            # Shown escaped: the message itself must be printable text.
            shown = str(directory / relative).encode(errors="backslashreplace").decode()
            why = "the name is not UTF-8 text, which an artifact path must be"
            raise _unwritable(shown, why) from None
        target = f"{under.rstrip('/')}/{relative}" if under.strip("/") else relative
        check_target(directory / relative, target)
    return relatives


def _listed_files(directory: Path) -> Iterator[Path]:
    """The regular files under directory (following links to files, not to folders),
    each opened once to prove it readable: a refusal raises before anything is sent
    (not pathlib's rglob, which passes over a folder it may not list without a word,
    so a tree would upload short and report success)."""
    for folder, _, file_names in os.walk(directory, onerror=_unreadable):
        for name in file_names:
            file = Path(folder, name)
            if not _TEMPORARY.fullmatch(name) and _readable_file(file):
                yield file


def _readable_file(file: Path) -> bool:
    """Whether file (a link followed) is a regular file, proven readable by opening it;
    a dangling link or a loop is none. A FIFO, socket or device is no file to upload,
    and opening a FIFO would wait for a writer. A file that cannot be looked at (in a
    folder that may be listed but not entered) or read raises (`_unreadable`)."""
    try:
        found = file.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False  # a dangling link
    except OSError as error:
        if error.errno == errno.ELOOP:
            return False
        _unreadable(error)
    if not stat.S_ISREG(found.st_mode):
        return False
    try:
        file.open("rb").close()  # as root, os.access says yes to any mode
    except OSError as error:
        _unreadable(error)
    return True


def _unreadable(error: OSError) -> NoReturn:
    """Raises the file system's refusal to list a folder or read a file of a tree."""
    raise _read_failed(error, NOTHING_SENT) from error


@contextlib.contextmanager
def local_reads(file: Path, left: str) -> Iterator[None]:
    """Turns the file system's refusal to read file once its tree was listed (removed
    since, or made unreadable) into FailedPreconditionError (LOCAL_READ_FAILED, metadata
    path and errno, as `files_in` raises), whose message ends with left: what the
    failure leaves. Only a refusal about file: one of a connection (no file) or of a
    copy's write (the file written, see `_written`) passes as it is, as a CairnError
    does (some are OSErrors: UnavailableError)."""
    try:
        yield
    except CairnError:
        raise
    except OSError as error:
        if _written(error) != str(file):  # about another file: the one a copy writes, say
            raise
        raise _read_failed(error, left) from error


def _read_failed(error: OSError, left: str) -> FailedPreconditionError:
    code = errno.errorcode.get(error.errno, "") if isinstance(error.errno, int) else ""
    # Escaped as a name that is not UTF-8 is (`files_in`), and on one line.
    local = str(error.filename).encode(errors="backslashreplace").decode()
    shown = on_one_line(names.shown(local))
    return FailedPreconditionError(
        f"could not read {shown}: {error.strerror or error}; {left}",
        reason="LOCAL_READ_FAILED",
        metadata={"path": shown, "errno": code},
    )


def check_target(local: Path, target: str) -> None:
    """Refuses target as the path of the object local is uploaded to, naming local
    (InvalidArgumentError, INVALID_PATH), as `files_in` refuses a file of a tree."""
    if problem := object_paths.new_object_problem(target):
        raise _unwritable(on_one_line(names.shown(str(local))), f"its artifact path {problem}")


def _unwritable(shown: str, why: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"{shown}: {why}; rename it ({NOTHING_SENT})",
        reason="INVALID_PATH",
        metadata={"path": shown},
    )


def local_file(root: Local, relative: str, path: str) -> Local:
    """The file that the object at path, relative to a download's destination, names in
    it: root joined with each "/"-separated segment, as one more component each.

    The names come from the store, where any project member may choose them, so each
    is checked for the platform root belongs to (a WindowsPath on Windows) before a byte
    is written: on Windows "C:" or "a.txt:x" would write outside root or into a stream.

    Raises:
        FailedPreconditionError: UNSAFE_LOCAL_PATH, a segment that would name anything
            but a file or folder of that name inside root.
    """
    segments = relative.split("/")
    windows = isinstance(root, PureWindowsPath)
    for segment in segments:
        problem = _unsafe_segment(segment, windows)
        if problem:
            raise _unsafe(root, path, problem)
    joined = root.joinpath(*segments)
    # What the join made, whatever rule above a platform's parsing slips past: exactly
    # root and the segments.
    if not joined.is_relative_to(root) or joined.relative_to(root).parts != tuple(segments):
        raise _unsafe(root, path, "it does not name a file inside the destination")
    return joined


def tree_files(root: Local, prefix: str, paths: Sequence[str]) -> list[Local]:
    """The local file of each object of a directory download (paths, each under prefix),
    checked all together before anything is written.

    Raises:
        FailedPreconditionError: UNSAFE_LOCAL_PATH (see `local_file`); LOCAL_PATH_CONFLICT
            when one object is a file where another needs a folder ("a" beside "a/b"),
            or two name one file where file names ignore case (Windows, macOS) or how
            an accented letter is spelled in Unicode (macOS: "é" or "e" + U+0301).
    """
    same_name = _name_key(root)
    files: dict[tuple[str, ...], str] = {}
    folders: dict[tuple[str, ...], str] = {}
    targets = []
    for path in paths:
        if not path.startswith(prefix):
            raise _unsafe(root, path, f"it is not under {prefix!r}")
        relative = path[len(prefix) :]
        targets.append(local_file(root, relative, path))
        key = tuple(map(same_name, relative.split("/")))
        if key in files:
            raise _conflict(files[key], path, "they name one file here")
        files[key] = path
        for depth in range(1, len(key)):
            folders.setdefault(key[:depth], path)
    for key, path in files.items():
        if key in folders:
            raise _conflict(path, folders[key], "the first is a file, the second needs it a folder")
    return targets


def _name_key(root: PurePath) -> Callable[[str], str]:
    """What a name is reduced to so that two names root's file system opens as one file
    are equal. NTFS ignores case only (it keeps "é" and "e" + U+0301 apart); APFS and
    HFS+ also ignore Unicode normalization, on case-sensitive volumes too (those, rare,
    get case twins refused as well: the default volume ignores case). Elsewhere the
    file system is asked (`ignores_case`): on Linux, vfat, exFAT, SMB mounts and ext4
    folders with casefold ignore case, and the platform says nothing of it."""
    if isinstance(root, PureWindowsPath):
        return str.casefold
    if sys.platform == "darwin":
        return _canonical_caseless
    if isinstance(root, Path) and ignores_case(root):
        return str.casefold
    return str


def ignores_case(folder: Path) -> bool:
    """Whether the file system folder is on (or would be: its nearest existing parent's)
    opens two names that differ only in case as one file (blocking). Asked of it: a new
    file named with letters, then its name with their case swapped looked up. The
    swapped name found at all is the answer, not its inode: a FUSE file system numbers
    each name it is asked for. Where nothing can be made (read-only, not ours), False:
    nothing will be written there either."""
    try:  # a folder past the name's length, or not ours to read: the write will say
        existing = next((place for place in (folder, *folder.parents) if place.is_dir()), None)
        if existing is None:
            return False
        handle, made = tempfile.mkstemp(prefix=".cairn-case-", suffix=".tmp", dir=existing)
    except OSError:
        return False
    try:
        os.close(handle)
        swapped = os.path.join(os.path.dirname(made), os.path.basename(made).swapcase())
        return os.path.lexists(swapped)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(made)


def check_written(root: Path, sizes: Mapping[str, int]) -> None:
    """Raises unless each file (relative to root, "/"-separated) is listed in its folder
    under its own name and holds its size, once all are written: a file system that
    opens two of the names as one file, which the names' check (`tree_files`) did not
    foresee, left one written over by the other. The listing, not only the size: a
    file system's cached attributes may still give the size of the file written over.

    Raises:
        FailedPreconditionError: LOCAL_PATH_CONFLICT, metadata path and local_path.
    """
    listed: dict[Path, set[str]] = {}
    for relative, size in sizes.items():
        local = root.joinpath(*relative.split("/"))
        if local.parent not in listed:
            # In one form: HFS+, and ZFS or SMB servers set so, list names decomposed.
            listed[local.parent] = {_nfc(name) for name in os.listdir(local.parent)}
        if _nfc(local.name) not in listed[local.parent]:
            raise _written_over(relative, local, "is not there under its name")
        if (found := local.stat().st_size) != size:
            raise _written_over(relative, local, f"holds {found} bytes, not the {size} written")


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _written_over(relative: str, local: Path, what: str) -> FailedPreconditionError:
    return FailedPreconditionError(
        f"{local} {what}: the file system there opens another of the names as the same "
        "file (it ignores case, say); nothing of it was kept (download into another file "
        "system)",
        reason="LOCAL_PATH_CONFLICT",
        metadata={"path": relative, "local_path": str(local)},
    )


def _canonical_caseless(name: str) -> str:
    # Unicode's canonical caseless match (D145), its definition of names equal up to
    # case and normalization; NFD also is the form HFS+ stores names in.
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


def check_room(root: Path, paths: Sequence[str], targets: Sequence[Path]) -> None:
    """Refuses a directory download (each object of paths to its file of targets, under
    root) that what is on disk already stands in the way of, before anything is
    written (blocking: run it in a thread): a local file where a folder is needed, or a
    local folder where a file goes (left by an earlier download of another version).

    Raises:
        FailedPreconditionError: LOCAL_PATH_CONFLICT, metadata path (the object) and
            local_path (what is in its way).
    """
    if paths:
        check_above(root, paths[0])
    checked: set[Path] = set()
    for path, target in zip(paths, targets, strict=True):
        if target.is_dir() and not target.is_symlink():
            raise _in_the_way(path, target, "a local folder has the name its file needs")
        for relative in target.relative_to(root).parents:
            folder = root / relative
            if folder in checked:
                continue
            checked.add(folder)
            if not folder.is_dir() and (folder.is_symlink() or folder.exists()):
                raise _in_the_way(path, folder, "a local file has the name of a folder it needs")


def check_above(folder: Path, path: str) -> None:
    """Refuses a download of the object path into folder when the nearest of folder and
    its parents on disk is no folder (a file, a link to none): nothing could be
    written under it, and its first write failed LOCAL_WRITE_FAILED naming a file
    that was never there (blocking: run it in a thread).

    Raises:
        FailedPreconditionError: LOCAL_PATH_CONFLICT, as `check_room`.
    """
    for place in (folder, *folder.parents):
        if place.is_dir():
            return
        if place.is_symlink() or place.exists():
            raise _in_the_way(path, place, "a local file has the name of a folder it needs")


@contextlib.contextmanager
def local_writes(target: Path, left: str) -> Iterator[None]:
    """Turns the file system's refusals while writing target (full, read-only, not
    ours) into FailedPreconditionError (LOCAL_WRITE_FAILED, metadata path and errno),
    whose message ends with left: what the failure leaves. A CairnError raised inside
    (some are OSErrors: UnavailableError) passes as it is."""
    try:
        yield
    except CairnError:
        raise
    except OSError as error:
        code = errno.errorcode.get(error.errno, "") if isinstance(error.errno, int) else ""
        path = _written(error) or target
        raise FailedPreconditionError(
            f"could not write {path}: {error.strerror or error}; {left}",
            reason="LOCAL_WRITE_FAILED",
            metadata={"path": str(path), "errno": code},
        ) from error


# The name of a file written before it is renamed into place (a download's, a copy's).
_TEMPORARY = re.compile(r"\.cairn-[0-9a-f]{32}\.part")
# Of a call naming two files, the refusals that are the first's: it could not be
# found or opened (the same lookups that leave a file out of a tree, `_readable_file`).
_NOT_OPENED = frozenset(
    {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ELOOP, errno.ENOTDIR}
)


def _written(error: OSError) -> str | None:
    """The file error is about. A copy (shutil.copyfile's sendfile on Linux, fcopyfile
    on macOS) names the file read first, the cache's, say, on another file system, and
    the file written second, for any failure once bytes went: the file written then
    (no room, EIO of its disk: where space is to be made or the fault is), unless the
    first could not be opened. A rename of a temporary file into place names the
    temporary file first, which is gone by now: the target it was renamed to then."""
    if error.filename2 and (
        error.errno not in _NOT_OPENED
        or _TEMPORARY.fullmatch(os.path.basename(str(error.filename)))
    ):
        return str(error.filename2)
    return None if error.filename is None else str(error.filename)


def _unsafe_segment(segment: str, windows: bool) -> str | None:
    """Why a segment cannot be a plain name inside a folder; None when it can."""
    if segment in ("", ".", "..") or "\0" in segment:
        return "it has an empty, '.' or '..' segment, or a NUL"
    if not windows:
        return None
    if _NOT_ON_WINDOWS.intersection(segment):
        return "a name holds a character Windows does not allow (':' names a drive or stream)"
    if segment.endswith((".", " ")):
        return "Windows drops a name's trailing dots and spaces ('.. ' is '..')"
    if segment.partition(".")[0].rstrip(" ").upper() in _WINDOWS_DEVICES:
        return "a name is one Windows keeps for a device"
    return None


def _unsafe(root: PurePath, path: str, why: str) -> FailedPreconditionError:
    return FailedPreconditionError(
        f"the object {path!r} cannot be downloaded into {str(root)!r}: {why}; nothing "
        f"was written (download it alone to a file name of your choice)",
        reason="UNSAFE_LOCAL_PATH",
        metadata={"path": path, "destination": str(root)},
    )


def _conflict(path: str, other: str, why: str) -> FailedPreconditionError:
    return FailedPreconditionError(
        f"the objects {path!r} and {other!r} cannot both be downloaded into one local "
        f"tree: {why}; nothing was written (download them one at a time)",
        reason="LOCAL_PATH_CONFLICT",
        metadata={"path": path, "other_path": other},
    )


def _in_the_way(path: str, local: Path, why: str) -> FailedPreconditionError:
    return FailedPreconditionError(
        f"the object {path!r} cannot be downloaded: {why} ({local}); nothing was written "
        "(move it away, or download into another folder)",
        reason="LOCAL_PATH_CONFLICT",
        metadata={"path": path, "local_path": str(local)},
    )
