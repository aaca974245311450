"""The filesystem backend's folders, made by uploads at once: a folder another upload
makes meanwhile is a folder, never taken for a file where a folder should be."""

import threading
from pathlib import Path

import pytest

from cairn_server.artifacts.filesystem import _make_folders


def _made_at_once(target: Path, uploads: int) -> list[OSError]:
    """What uploads making target's folders at the same moment failed with."""
    start, failed = threading.Barrier(uploads), []

    def make() -> None:
        start.wait()
        try:
            _make_folders(target)
        except OSError as error:
            failed.append(error)

    threads = [threading.Thread(target=make) for _ in range(uploads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failed


def test_uploads_making_the_same_folders_at_once_all_go_on(tmp_path: Path) -> None:
    """One upload looked (is_dir), another made the folder, then the first looked again
    (exists) and took it for a file: ENOTDIR, told as UNAVAILABLE, to the first uploads
    to a new project sent at once (in 3 of 4 rounds of 8 here)."""
    for round_ in range(20):
        target = tmp_path / str(round_) / "a" / "b"
        assert _made_at_once(target, 8) == []
        assert target.is_dir()


def test_a_file_where_a_folder_should_be_is_named(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"not a folder")
    with pytest.raises(NotADirectoryError) as raised:
        _make_folders(tmp_path / "a" / "b")
    assert raised.value.filename == str(tmp_path / "a")
