"""How direct transfer on S3 cuts an object: the service's parts and the client's
ranges cover every byte once, within S3's limits, whatever the size."""

import pytest

from cairn._clients._presigned import MAX_RANGE, MIN_RANGE, StoreRefused, _lasting, _ranges
from cairn_server.artifacts.blobs import MAX_OBJECT_BYTES
from cairn_server.artifacts.presigned import MAX_PARTS, PART_SIZE, _part_size
from cairn_server.common.errors import FailedPrecondition

MIB = 1024 * 1024
SIZES = [1, 8 * MIB, 16 * MIB + 1, 1024 * MIB, 100 * 1024 * MIB + 7, MAX_OBJECT_BYTES]


@pytest.mark.parametrize("size", SIZES)
def test_parts_stay_within_s3s_limits(size: int) -> None:
    part = _part_size(size)
    assert 5 * MIB <= part <= 5 * 1024 * MIB and part % MIB == 0
    assert -(-size // part) <= MAX_PARTS
    assert part == PART_SIZE or -(-size // (part - MIB)) > MAX_PARTS  # the least that fits


@pytest.mark.parametrize("most_parts", [205, 700, 1024])
def test_fewer_parts_are_larger_ones_within_s3s_largest(most_parts: int) -> None:
    part = _part_size(MAX_OBJECT_BYTES // 5, most_parts)
    assert -(-(MAX_OBJECT_BYTES // 5) // part) <= most_parts and part <= 5 * 1024 * MIB


def test_an_object_that_would_need_parts_larger_than_s3s_is_not_offered_them() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        _part_size(MAX_OBJECT_BYTES, 1023)  # 5 TiB in 1,023 parts: over 5 GiB each
    assert refused.value.reason == "DIRECT_TRANSFER_UNAVAILABLE"
    assert _part_size(MAX_OBJECT_BYTES, 1024) == 5 * 1024 * MIB


@pytest.mark.parametrize("connections", [1, 2, 4])
@pytest.mark.parametrize("size", SIZES)
def test_ranges_cover_the_object_once(size: int, connections: int) -> None:
    ranges = _ranges(size, connections)
    assert [start for start, _ in ranges] == [0, *(s + n for s, n in ranges[:-1])]
    assert sum(length for _, length in ranges) == size
    if connections == 1:
        assert ranges == [(0, size)]  # one GET
    else:
        assert all(MIN_RANGE <= n <= MAX_RANGE for _, n in ranges[:-1])
        assert len(ranges) <= max(2 * connections, -(-size // MAX_RANGE))


def test_a_url_that_expired_does_not_keep_the_client_off_the_store() -> None:
    """S3's answer to a presigned URL past its expiry is a 403 like a wrong signature's:
    only the message tells them apart. The next transfer's URLs are new."""
    expired = StoreRefused(
        403,
        b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message>"
        b"<X-Amz-Expires>3600</X-Amz-Expires></Error>",
    )
    refused = StoreRefused(
        403, b"<Error><Code>SignatureDoesNotMatch</Code><Message>...</Message></Error>"
    )
    assert expired.expired and not _lasting(expired)
    assert not refused.expired and _lasting(refused)
