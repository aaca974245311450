"""How the S3 backend cuts a streamed upload into parts: the part a client's announced
size asks for has a bound, and each part is read whole into one buffer every part
reuses (s3.PartBuffer) rather than built by the SDK from short reads, which cost time in
the square of the part's size and held copies of it."""

import pytest
from minio.helpers import check_bucket_name

from cairn_server.artifacts import s3
from cairn_server.artifacts.blobs import MAX_OBJECT_BYTES
from cairn_server.artifacts.s3 import PartBuffer

MIB = 1024 * 1024


def test_parts_are_the_least_that_fit_the_part_count_and_at_most_the_bound() -> None:
    assert s3._part_size(0) == s3.S3_UNKNOWN_SIZE_PART
    assert s3._part_size(1) == s3.S3_MIN_PART
    assert s3._part_size(s3.S3_MAX_PARTS * 7 * MIB) == 7 * MIB
    # 5 TiB announced asked for parts of 583 MiB, held in memory whole.
    assert s3._part_size(MAX_OBJECT_BYTES) == s3.S3_MAX_STREAMED_PART == 32 * MIB
    assert s3._part_size(s3.MAX_STREAMED_BYTES) == s3.S3_MAX_STREAMED_PART


class _ShortReads:
    """A stream that returns at most one chunk a read, as an upload's does."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self._data, self._chunk = data, chunk

    def read(self, n: int = -1) -> bytes:
        size = self._chunk if n < 0 else min(n, self._chunk)
        taken, self._data = self._data[:size], self._data[size:]
        return taken


def test_parts_are_filled_whole_from_short_reads_until_the_end() -> None:
    data = bytes(range(256)) * 40  # 10,240 bytes
    parts = PartBuffer(_ShortReads(data, chunk=1000), 4096)
    assert bytes(parts.fill()) == data[:4096]
    assert bytes(parts.fill()) == data[4096:8192]
    assert bytes(parts.fill()) == data[8192:]  # the end came first
    assert bytes(parts.fill()) == b""


def test_a_source_that_ends_with_a_full_part_is_told_from_one_that_goes_on() -> None:
    """One part exactly is sent as a single PUT: the buffer reads ahead to know, and
    what it read ahead starts the next part."""
    exact = PartBuffer(_ShortReads(b"x" * 4096, chunk=1000), 4096)
    assert len(exact.fill()) == 4096 and exact.ended()
    longer = PartBuffer(_ShortReads(b"x" * 4096 + b"yz", chunk=1000), 4096)
    assert len(longer.fill()) == 4096 and not longer.ended()
    assert bytes(longer.fill()) == b"yz"


def test_what_streams_through_is_what_its_parts_hold() -> None:
    backend = s3.S3Backend.__new__(s3.S3Backend)  # no store needed: arithmetic only
    assert backend.write_limit(0) == s3.S3_MAX_PARTS * s3.S3_UNKNOWN_SIZE_PART  # ~70 GiB
    assert backend.write_limit(1) == s3.S3_MAX_PARTS * s3.S3_MIN_PART
    assert backend.write_limit(MAX_OBJECT_BYTES) == s3.MAX_STREAMED_BYTES < MAX_OBJECT_BYTES


def test_a_value_error_is_the_stores_only_when_the_sdk_raised_it() -> None:
    """The SDK raises ValueError for an answer without an element it must hold: that is
    the store failing. One raised by the bytes being sent stays what it is."""
    with pytest.raises(ValueError) as sdk:
        check_bucket_name("")  # a ValueError of the SDK's own
    assert s3._raised_by_the_sdk(sdk.value)
    with pytest.raises(ValueError) as ours:
        PartBuffer(_Failing(), 10).fill()
    assert not s3._raised_by_the_sdk(ours.value)


class _Failing:
    def read(self, n: int = -1) -> bytes:
        raise ValueError("a source's own")
