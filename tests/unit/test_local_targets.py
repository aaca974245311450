"""The local file each downloaded object lands in: inside the destination or refused,
judged by the rules of the destination's platform (PureWindowsPath stands for a
Windows client's Path), and trees a local file system cannot hold refused whole."""

from pathlib import PurePosixPath, PureWindowsPath

import pytest

from cairn._clients._local_files import local_file, tree_files
from cairn.exceptions import FailedPreconditionError

WINDOWS = PureWindowsPath(r"D:\work\downloads")
POSIX = PurePosixPath("/work/downloads")


@pytest.mark.parametrize(
    "relative",
    [
        "C:/Users/Public/evil.bat",  # a drive: wins the join
        "C:evil.bat",  # drive-relative
        "a.txt:hidden",  # an NTFS stream
        "sub/.. ",  # Windows drops trailing spaces and dots: ".."
        "name.",
        "NUL",  # devices, in any folder, with any extension
        "logs/com1.txt",
        "CONOUT$",
        "a\\..\\..\\b",  # a separator of its own
        "what?.txt",
        "..",
        "a//b",
    ],
)
def test_a_name_windows_would_not_keep_inside_is_refused(relative: str) -> None:
    with pytest.raises(FailedPreconditionError) as refused:
        local_file(WINDOWS, relative, f"models/{relative}")
    assert refused.value.reason == "UNSAFE_LOCAL_PATH"
    assert refused.value.metadata == {"path": f"models/{relative}", "destination": str(WINDOWS)}


def test_plain_names_land_inside_on_either_platform() -> None:
    assert local_file(WINDOWS, "a b/c.d", "x") == WINDOWS / "a b" / "c.d"
    assert local_file(WINDOWS, "console.log", "x") == WINDOWS / "console.log"
    # Where they are plain names, ":" and "\\" are kept.
    assert local_file(POSIX, "C:/a.txt:x", "x") == POSIX / "C:" / "a.txt:x"
    assert local_file(POSIX, "a\\b", "x") == POSIX / "a\\b"
    for relative in ("..", "a/../../b", "", "a//b", "."):
        with pytest.raises(FailedPreconditionError):
            local_file(POSIX, relative, "x")


def test_a_file_where_a_folder_is_needed_is_a_conflict() -> None:
    with pytest.raises(FailedPreconditionError) as refused:
        tree_files(POSIX, "d/", ["d/0", "d/a", "d/a/b/c"])
    assert refused.value.reason == "LOCAL_PATH_CONFLICT"
    assert refused.value.metadata == {"path": "d/a", "other_path": "d/a/b/c"}
    assert tree_files(POSIX, "d/", ["d/a", "d/ab/c"]) == [POSIX / "a", POSIX / "ab" / "c"]


def test_names_one_file_on_windows_are_a_conflict_there() -> None:
    with pytest.raises(FailedPreconditionError) as refused:
        tree_files(WINDOWS, "d/", ["d/Model.bin", "d/model.bin"])
    assert refused.value.reason == "LOCAL_PATH_CONFLICT"
    with pytest.raises(FailedPreconditionError):
        tree_files(WINDOWS, "d/", ["d/A", "d/a/b"])


def test_an_object_outside_the_listed_directory_is_refused() -> None:
    with pytest.raises(FailedPreconditionError) as refused:
        tree_files(POSIX, "d/", ["d/a", "e/b"])
    assert refused.value.reason == "UNSAFE_LOCAL_PATH"
