"""Counting a request's lists from its bytes: exact, stopped early, past unknown fields
and groups, and refusing bytes it cannot walk."""

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.internal import encoder

from cairn.registry.v1 import registry_pb2, registry_service_pb2
from cairn.tracking.v1 import tracking_pb2, tracking_service_pb2
from cairn_server.common import messages, wire

CREATE = registry_service_pb2.CreateRegisteredModelRequest.DESCRIPTOR
BATCH = tracking_service_pb2.LogBatchRequest.DESCRIPTOR
AN_UNKNOWN_GROUP = b"\x9b\x06\x9c\x06"  # field 99: a group begun, and ended


def _limit(most: int) -> wire.ElementLimit:
    def limit_of(descriptor: Descriptor, field: FieldDescriptor) -> int:
        return most

    return limit_of


def _model_of(versions: int, padding: int = wire.COUNTED_FROM_BYTES) -> bytes:
    """A CreateRegisteredModelRequest of that many empty versions, and a description
    long enough to be counted."""
    model = registry_pb2.RegisteredModel(description="d" * padding)
    model.latest_versions.extend(registry_pb2.ModelVersion() for _ in range(versions))
    request = registry_service_pb2.CreateRegisteredModelRequest(registered_model=model)
    return request.SerializeToString()


def _excess(data: bytes, descriptor: Descriptor, most: int, walked: int) -> tuple[str | None, int]:
    with pytest.raises(wire.TooMany) as refused:
        wire.check(data, descriptor, _limit(most), walked)
    return refused.value.field, refused.value.limit


def test_a_list_is_counted_against_its_limit_and_all_of_them_against_theirs() -> None:
    data = _model_of(999)
    wire.check(data, CREATE, _limit(999), 999)
    assert _excess(data, CREATE, 998, 10**6) == ("registered_model.latest_versions", 998)
    assert _excess(data, CREATE, 10**6, 998) == (None, 998)


def test_map_entries_are_counted() -> None:
    model = registry_pb2.RegisteredModel(description="d" * wire.COUNTED_FROM_BYTES)
    for n in range(10):
        model.custom_properties[f"p{n}"].string_value = "v"
    data = registry_service_pb2.CreateRegisteredModelRequest(
        registered_model=model
    ).SerializeToString()
    wire.check(data, CREATE, _limit(10), 10)
    assert _excess(data, CREATE, 9, 100) == ("registered_model.custom_properties", 9)


def test_strings_and_packed_numbers_are_counted() -> None:
    """An empty string is two bytes sent and about 16 decoded, a one-byte number 8."""
    keys = tracking_service_pb2.LogBatchRequest()
    keys.metrics.keys.extend([""] * 40_000)
    assert _excess(keys.SerializeToString(), BATCH, 39_999, 10**6) == ("metrics.keys", 39_999)
    assert _excess(keys.SerializeToString(), BATCH, 10**6, 39_999) == (None, 39_999)
    steps = tracking_service_pb2.LogBatchRequest()
    steps.metrics.steps.extend([1] * 70_000 + [2**40] * 10)  # varints of 1 and 6 bytes
    assert _excess(steps.SerializeToString(), BATCH, 70_009, 0) == ("metrics.steps", 70_009)
    wire.check(steps.SerializeToString(), BATCH, _limit(70_010), 0)  # numbers are not walked
    values = tracking_service_pb2.LogBatchRequest()
    values.metrics.values.extend([0.5] * 10_000)
    assert _excess(values.SerializeToString(), BATCH, 9_999, 0) == ("metrics.values", 9_999)


def test_an_unknown_group_is_walked_past() -> None:
    """Skipped as bytes the walk could not read, it let a whole request through to be
    decoded: upb keeps such a group aside and decodes the rest."""
    data = AN_UNKNOWN_GROUP + _model_of(999)
    registry_service_pb2.CreateRegisteredModelRequest.FromString(data)  # upb takes it
    assert _excess(data, CREATE, 998, 10**6) == ("registered_model.latest_versions", 998)


def test_a_small_request_is_not_counted() -> None:
    data = _model_of(999, padding=0)
    assert len(data) < wire.COUNTED_FROM_BYTES
    wire.check(data, CREATE, _limit(1), 1)


@pytest.mark.parametrize(
    "broken",
    [
        lambda data: data[:-1],  # cut inside a field
        lambda data: data + b"\x07",  # no wire type 7
        lambda data: data + b"\x0c",  # a group ended that never began
        lambda data: data + b"\x0b",  # a group begun and never ended
        lambda data: b"\x0a" + encoder._VarintBytes(2**40) + data,  # past the end
    ],
)
def test_bytes_that_are_no_message_are_unreadable(broken) -> None:
    with pytest.raises(wire.Unreadable):
        wire.check(broken(_model_of(10)), CREATE, _limit(10**6), 10**6)


def test_a_full_batch_is_within_the_request_checks_limits() -> None:
    request = tracking_service_pb2.LogBatchRequest(
        params=[tracking_pb2.Param(key=f"p{n}", value="v" * 100) for n in range(1000)],
        tags=[tracking_pb2.Tag(key=f"t{n}", value="v" * 100) for n in range(1000)],
    )
    columns = request.metrics
    columns.keys.extend(f"k{n}" for n in range(100_000))
    columns.key_indexes.extend(range(100_000))
    columns.values.extend([0.5] * 100_000)
    columns.steps.extend(range(100_000))
    columns.timestamps_ms.extend([1_700_000_000_000] * 100_000)
    data = request.SerializeToString()
    wire.check(data, BATCH, messages._element_limit, messages.MAX_WALKED_ELEMENTS)


def test_the_lists_of_a_message_sent_several_times_add_up() -> None:
    """The decoder merges the copies of a singular message: 55 copies of a LogBatch's
    metric columns, each with 100,000 one-byte steps, decoded to 5.5 million (250 MB)
    though each copy passed."""
    columns = tracking_pb2.MetricColumns(steps=[1] * 40_000).SerializeToString()
    copy = b"\x22" + encoder._VarintBytes(len(columns)) + columns  # field 4: metrics
    data = copy * 3
    merged = tracking_service_pb2.LogBatchRequest.FromString(data)
    assert len(merged.metrics.steps) == 120_000
    assert _excess(data, BATCH, 100_000, 0) == ("metrics.steps", 100_000)


def test_a_request_of_countless_fields_is_refused_without_walking_them_all() -> None:
    """16 MiB of empty metric columns, two bytes each, took 10 s of the loop to walk;
    none is a list, so no limit of a list stopped the walk."""
    data = b"\x22\x00" * (wire.MAX_FIELDS + 1)
    with pytest.raises(wire.TooMany) as refused:
        wire.check(data, BATCH, _limit(10**9), 10**9)
    assert (refused.value.field, refused.value.limit, refused.value.counted) == (
        None,
        wire.MAX_FIELDS,
        "fields",
    )
