"""How a tree's files are parcelled (small ones in batches, in path order) and how an
answer of a batch's download is sorted: the files it holds, those handed back."""

import asyncio
import contextlib
import hashlib
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cairn._clients import _file_batches
from cairn._clients._file_batches import BATCH_BYTES, Batch, LocalFile, batched, sorted_answer
from cairn.artifacts.v1 import artifacts_pb2 as pb
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.exceptions import DataLossError
from tests.conftest import eventually


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


def test_a_batch_asks_no_more_content_than_an_answer_holds() -> None:
    from cairn_server.artifacts import file_reads

    assert BATCH_BYTES <= file_reads.CONTENT_BYTES


ASKED = ["t/a", "t/b", "t/c"]
PLACES = [(path, Path(path)) for path in ASKED]


def _entry(path: str, content: bytes | None, stored: bytes | None = None) -> api.FileDownload:
    """An answer's entry for path: its object described as holding stored (content
    when not given), with content as its bytes (None: left out)."""
    described = content if stored is None else stored
    info = pb.ObjectInfo(
        path=path, size=len(described or b""), sha256=hashlib.sha256(described or b"").hexdigest()
    )
    if content is None:
        return api.FileDownload(object=info)
    return api.FileDownload(object=info, content=content)


def test_an_answer_s_files_with_their_bytes_are_kept_and_the_rest_handed_back() -> None:
    answered = [_entry("t/a", b"a"), _entry("t/b", None), _entry("t/c", b"")]

    arrived, left = sorted_answer(ASKED, PLACES, answered)

    assert arrived == [(Path("t/a"), b"a"), (Path("t/c"), b"")]
    assert left == ["t/b"]


@pytest.mark.parametrize(
    "answered",
    [
        [_entry("t/a", b"a"), _entry("t/b", b"b")],  # fewer than asked
        [_entry(path, b"x") for path in [*ASKED, "t/d"]],  # more
    ],
    ids=["fewer", "more"],
)
def test_an_answer_of_another_count_writes_nothing(answered: list[api.FileDownload]) -> None:
    assert sorted_answer(ASKED, PLACES, answered) == ([], ASKED)


@pytest.mark.parametrize(
    ("answered", "handed_back"),
    [
        ([_entry("t/b", b"b"), _entry("t/a", b"a"), _entry("t/c", b"c")], ["t/a", "t/b"]),
        ([_entry("t/a", b"a"), _entry("t/x", b"b"), _entry("t/c", b"c")], ["t/b"]),
        ([_entry("t/a", b"a"), api.FileDownload(content=b"b"), _entry("t/c", b"c")], ["t/b"]),
    ],
    ids=["out of order", "another path", "no description"],
)
def test_bytes_described_as_another_path_s_are_handed_back(
    answered: list[api.FileDownload], handed_back: list[str]
) -> None:
    """The file is downloaded alone, never written from bytes described as another
    object's, or as none."""
    arrived, left = sorted_answer(ASKED, PLACES, answered)

    assert left == handed_back
    assert [target for target, _ in arrived] == [Path(p) for p in ASKED if p not in handed_back]


@pytest.mark.parametrize(
    "entry",
    [_entry("t/b", b"B", stored=b"b"), _entry("t/b", b"bb", stored=b"b")],
    ids=["other bytes", "more bytes"],
)
def test_bytes_that_are_not_the_described_object_s_refuse_the_whole_answer(
    entry: api.FileDownload,
) -> None:
    with pytest.raises(DataLossError) as refused:
        sorted_answer(ASKED, PLACES, [_entry("t/a", b"a"), entry, _entry("t/c", b"c")])

    assert refused.value.reason == "CHECKSUM_MISMATCH"
    assert refused.value.metadata["expected_sha256"] == hashlib.sha256(b"b").hexdigest()


async def test_a_batch_cancelled_as_it_writes_writes_nothing_after_it_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file under way is finished, whole; the others are not begun, and the call
    returns once its thread has ended: a thread that went on wrote files after the call
    (into a folder its caller removes then, a model's scratch folder)."""
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()
    landing, write_each = _file_batches.landing, _file_batches._write_each

    @contextlib.contextmanager
    def held(target: Path) -> Iterator[Path]:
        entered.set()
        release.wait(10)
        with landing(target) as temporary:
            yield temporary

    def watched(*args: Any) -> None:
        write_each(*args)
        finished.set()

    stops: list[threading.Event] = []

    class Stop(threading.Event):
        def __init__(self) -> None:
            super().__init__()
            stops.append(self)

    monkeypatch.setattr(_file_batches, "landing", held)
    monkeypatch.setattr(_file_batches, "_write_each", watched)
    monkeypatch.setattr(_file_batches, "threading", types.SimpleNamespace(Event=Stop))
    files = [(tmp_path / name, name.encode()) for name in ("a", "b", "c")]
    writing = asyncio.ensure_future(_file_batches._written(files))
    await asyncio.to_thread(entered.wait, 10)

    writing.cancel()
    await eventually(lambda: stops[0].is_set(), what="the writes told to stop")
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await writing

    assert finished.is_set()
    assert sorted(file.name for file in tmp_path.iterdir()) == ["a"]
    assert (tmp_path / "a").read_bytes() == b"a"
