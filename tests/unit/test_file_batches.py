"""How a tree's files are parcelled: small ones in batches, in path order."""

from pathlib import Path

import pytest

from cairn._clients import _file_batches
from cairn._clients._file_batches import BATCH_BYTES, Batch, LocalFile, batched


def _files(*sizes: int) -> list[LocalFile]:
    return [(Path(f"f{n}"), size, f"t/f{n}") for n, size in enumerate(sizes)]


def _shape(parcels: list[Batch[LocalFile] | LocalFile]) -> list[list[str] | str]:
    return [
        [path for _, _, path in parcel.files] if isinstance(parcel, Batch) else parcel[2]
        for parcel in parcels
    ]


def _size(file: LocalFile) -> int:
    return file[1]


def _never(size: int) -> bool:
    return False


def test_consecutive_small_files_share_a_batch_up_to_its_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_file_batches, "BATCH_FILES", 2)

    assert _shape(list(batched(_files(1, 1, 1, 1, 1), _size, _never))) == [
        ["t/f0", "t/f1"],
        ["t/f2", "t/f3"],
        "t/f4",  # a batch of one file is that file
    ]


def test_a_batch_holds_at_most_its_bytes_and_a_larger_file_goes_alone() -> None:
    half = BATCH_BYTES // 2
    files = _files(half, half, 1, BATCH_BYTES + 1, 1, 1)

    assert _shape(list(batched(files, _size, _never))) == [
        ["t/f0", "t/f1"],
        "t/f3",
        ["t/f2", "t/f4", "t/f5"],
    ]


def test_a_file_the_client_sends_directly_is_never_batched() -> None:
    assert _shape(list(batched(_files(1, 500, 2, 3), _size, lambda size: size >= 500))) == [
        "t/f1",
        ["t/f0", "t/f2", "t/f3"],
    ]


def test_batches_keep_within_what_the_server_takes() -> None:
    from cairn_server.artifacts import batches

    assert _file_batches.BATCH_FILES == batches.MAX_FILES
