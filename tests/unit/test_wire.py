"""Counting a request's messages from its bytes: exact, stopped early, and never the
judge of bytes that do not decode."""

from google.protobuf.internal import encoder

from cairn.registry.v1 import registry_pb2, registry_service_pb2
from cairn.tracking.v1 import tracking_pb2, tracking_service_pb2
from cairn_server.common import wire

CREATE = registry_service_pb2.CreateRegisteredModelRequest.DESCRIPTOR
BATCH = tracking_service_pb2.LogBatchRequest.DESCRIPTOR


def _model_of(versions: int, padding: int = wire.COUNTED_FROM_BYTES) -> bytes:
    """A CreateRegisteredModelRequest of that many empty versions, and a description
    long enough to be counted."""
    model = registry_pb2.RegisteredModel(description="d" * padding)
    model.latest_versions.extend(registry_pb2.ModelVersion() for _ in range(versions))
    return registry_service_pb2.CreateRegisteredModelRequest(
        registered_model=model
    ).SerializeToString()


def test_every_sub_message_nested_or_not_is_counted() -> None:
    data = _model_of(999)  # the model and its 999 versions
    assert wire.holds_at_most(data, CREATE, 1000)
    assert not wire.holds_at_most(data, CREATE, 999)


def test_map_entries_and_their_message_values_are_counted() -> None:
    model = registry_pb2.RegisteredModel(description="d" * wire.COUNTED_FROM_BYTES)
    for n in range(10):
        model.custom_properties[f"p{n}"].string_value = "v"
    data = registry_service_pb2.CreateRegisteredModelRequest(
        registered_model=model
    ).SerializeToString()
    assert wire.holds_at_most(data, CREATE, 21)  # the model, 10 entries, 10 values
    assert not wire.holds_at_most(data, CREATE, 20)


def test_a_small_request_is_not_counted() -> None:
    data = _model_of(999, padding=0)
    assert len(data) < wire.COUNTED_FROM_BYTES
    assert wire.holds_at_most(data, CREATE, 1)


def test_bytes_that_are_no_message_are_left_to_the_decoder() -> None:
    data = _model_of(999)
    past_its_end = b"\x0a" + encoder._VarintBytes(len(data) + 1) + data[1:]
    for broken in (data[:-1], data + b"\x07", b"\x0b" + data, past_its_end):
        assert wire.holds_at_most(broken, CREATE, 1000)


def test_a_large_batch_of_columns_is_within() -> None:
    request = tracking_service_pb2.LogBatchRequest(
        params=[tracking_pb2.Param(key=f"p{n}", value="v" * 100) for n in range(1000)]
    )
    request.metrics.values.extend(float(n) for n in range(100_000))
    assert wire.holds_at_most(request.SerializeToString(), BATCH, 1001)
    assert not wire.holds_at_most(request.SerializeToString(), BATCH, 1000)
