"""Names a directory download's local file system opens as one file, though spelled
differently in Unicode: "é" as one code point (NFC) or as "e" and a combining accent
(NFD). macOS (APFS, HFS+) opens both as one file, so two objects so named are refused
there, as case twins are; Windows (NTFS) and Linux keep them apart."""

import sys
import unicodedata
from pathlib import PurePosixPath, PureWindowsPath

import pytest

from cairn._clients._local_files import tree_files
from cairn.exceptions import FailedPreconditionError

POSIX = PurePosixPath("/work/downloads")
WINDOWS = PureWindowsPath(r"D:\work\downloads")
COMPOSED = "caf\u00e9"  # "é" as U+00E9, what most keyboards type
DECOMPOSED = "cafe\u0301"  # "e" + COMBINING ACUTE ACCENT, what HFS+ stored


def test_the_two_spellings_differ_only_in_normalization() -> None:
    assert COMPOSED != DECOMPOSED
    assert unicodedata.normalize("NFC", DECOMPOSED) == COMPOSED


@pytest.fixture
def on_macos(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")


@pytest.fixture
def on_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")


@pytest.mark.usefixtures("on_macos")
def test_files_spelled_both_ways_are_a_conflict_on_macos() -> None:
    paths = [f"d/{COMPOSED}.bin", f"d/{DECOMPOSED}.bin"]
    with pytest.raises(FailedPreconditionError) as refused:
        tree_files(POSIX, "d/", paths)
    assert refused.value.reason == "LOCAL_PATH_CONFLICT"
    # The objects' own spellings, not the key they were compared by.
    assert refused.value.metadata == {"path": paths[0], "other_path": paths[1]}


@pytest.mark.usefixtures("on_macos")
def test_folders_spelled_both_ways_are_one_folder_on_macos() -> None:
    with pytest.raises(FailedPreconditionError) as refused:
        tree_files(POSIX, "d/", [f"d/{COMPOSED}/w.bin", f"d/{DECOMPOSED}/w.bin"])
    assert refused.value.reason == "LOCAL_PATH_CONFLICT"
    # Two different files, one under each spelling of a folder, share that folder.
    assert tree_files(POSIX, "d/", [f"d/{COMPOSED}/a", f"d/{DECOMPOSED}/b"]) == [
        POSIX / COMPOSED / "a",
        POSIX / DECOMPOSED / "b",
    ]


@pytest.mark.usefixtures("on_macos")
def test_a_file_in_one_spelling_where_the_other_needs_a_folder_is_a_conflict_on_macos() -> None:
    with pytest.raises(FailedPreconditionError) as refused:
        tree_files(POSIX, "d/", [f"d/{COMPOSED}", f"d/{DECOMPOSED}/w.bin"])
    assert refused.value.reason == "LOCAL_PATH_CONFLICT"
    assert refused.value.metadata == {
        "path": f"d/{COMPOSED}",
        "other_path": f"d/{DECOMPOSED}/w.bin",
    }


@pytest.mark.usefixtures("on_macos")
def test_case_and_normalization_together_are_a_conflict_on_macos() -> None:
    with pytest.raises(FailedPreconditionError) as refused:
        tree_files(POSIX, "d/", [f"d/{COMPOSED.upper()}", f"d/{DECOMPOSED}"])
    assert refused.value.reason == "LOCAL_PATH_CONFLICT"
    # An accent is part of the name: "cafe" and "café" are two files.
    assert tree_files(POSIX, "d/", ["d/cafe", f"d/{COMPOSED}"]) == [
        POSIX / "cafe",
        POSIX / COMPOSED,
    ]


def test_windows_keeps_the_two_spellings_apart() -> None:
    # NTFS compares names ignoring case but not normalization.
    assert tree_files(WINDOWS, "d/", [f"d/{COMPOSED}", f"d/{DECOMPOSED}/w.bin"]) == [
        WINDOWS / COMPOSED,
        WINDOWS / DECOMPOSED / "w.bin",
    ]
    with pytest.raises(FailedPreconditionError) as refused:
        tree_files(WINDOWS, "d/", [f"d/{COMPOSED}", f"d/{COMPOSED.upper()}"])
    assert refused.value.reason == "LOCAL_PATH_CONFLICT"


@pytest.mark.usefixtures("on_linux")
def test_linux_keeps_every_spelling_apart() -> None:
    paths = [f"d/{COMPOSED}", f"d/{DECOMPOSED}", f"d/{COMPOSED.upper()}"]
    assert tree_files(POSIX, "d/", paths) == [
        POSIX / COMPOSED,
        POSIX / DECOMPOSED,
        POSIX / COMPOSED.upper(),
    ]
