"""Where a destination's file system ignores case, which on Linux only it can say (vfat,
exFAT, SMB mounts, ext4 folders with casefold): asked of it, and two names it opens as
one file refused before anything is written."""

import os
import sys
import unicodedata
from pathlib import Path

import pytest

from cairn._clients import _local_files
from cairn._clients._local_files import check_written, ignores_case, tree_files
from cairn.exceptions import FailedPreconditionError

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="case-sensitive file systems")


def test_a_case_sensitive_file_system_is_found_so_and_left_clean(tmp_path: Path) -> None:
    assert ignores_case(tmp_path) is False
    assert ignores_case(tmp_path / "not" / "made" / "yet") is False  # its parent asked
    assert list(tmp_path.iterdir()) == []


def test_a_case_insensitive_file_system_is_found_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file system stood in for by a lookup that ignores case."""
    lexists = os.path.lexists
    monkeypatch.setattr(os.path, "lexists", lambda path: lexists(str(path).lower()))
    assert ignores_case(tmp_path) is True


def test_case_twins_are_refused_where_the_file_system_ignores_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Linux, names were compared as they are spelled whatever the destination: a
    model of W.bin and w.bin written to vfat or an SMB mount kept one file of the two,
    under a manifest naming both, and loaded OK."""
    assert len(tree_files(tmp_path, "", ["W.bin", "w.bin"])) == 2  # case-sensitive here
    monkeypatch.setattr(_local_files, "ignores_case", lambda folder: folder == tmp_path)

    with pytest.raises(FailedPreconditionError) as refused:
        tree_files(tmp_path, "", ["W.bin", "w.bin"])

    assert refused.value.reason == "LOCAL_PATH_CONFLICT"
    assert {refused.value.metadata["path"], refused.value.metadata["other_path"]} == {
        "W.bin",
        "w.bin",
    }
    assert list(tmp_path.iterdir()) == []


def test_a_file_written_over_by_another_name_is_found_by_its_size(tmp_path: Path) -> None:
    """Two names of one file stood in for by a hard link: W.bin's 18 bytes, then w.bin's
    5 over them."""
    (tmp_path / "w.bin").write_bytes(b"lower")
    os.link(tmp_path / "w.bin", tmp_path / "W.bin")

    with pytest.raises(FailedPreconditionError) as refused:
        check_written(tmp_path, {"W.bin": 18, "w.bin": 5})

    assert refused.value.reason == "LOCAL_PATH_CONFLICT"
    assert refused.value.metadata["path"] == "W.bin"


def test_a_file_renamed_over_by_another_name_is_found_missing(tmp_path: Path) -> None:
    """The folder lists w.bin alone, as a case-insensitive one does once w.bin was renamed
    over W.bin (whose attributes a FUSE mount may still serve, its size too)."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.bin").write_bytes(b"lower")

    with pytest.raises(FailedPreconditionError) as refused:
        check_written(tmp_path, {"sub/W.bin": 5, "sub/w.bin": 5})

    assert refused.value.reason == "LOCAL_PATH_CONFLICT"
    assert refused.value.metadata["local_path"] == str(tmp_path / "sub" / "W.bin")


def test_a_destination_the_probe_cannot_look_at_is_left_for_the_write(tmp_path: Path) -> None:
    """A folder name past the file system's length made the probe raise a bare OSError
    (ENAMETOOLONG) from tree_files, before the download's own check could call it a
    failed local write."""
    too_long = tmp_path / ("a" * 300)
    assert ignores_case(too_long) is False
    assert tree_files(too_long, "", ["x.bin"]) == [too_long / "x.bin"]


def test_names_a_file_system_lists_decomposed_are_found_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HFS+, and ZFS or SMB servers set so, list "café" decomposed: a model of café.bin
    was refused there as a file written over, "not there under its name"."""
    composed = unicodedata.normalize("NFC", "café.bin")
    (tmp_path / composed).write_bytes(b"12345")
    listdir = os.listdir
    monkeypatch.setattr(
        os, "listdir", lambda path: [unicodedata.normalize("NFD", n) for n in listdir(path)]
    )
    check_written(tmp_path, {composed: 5})
