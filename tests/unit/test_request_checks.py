"""The checks every request gets before a handler: it decodes, its strings can be stored."""

import pytest

from cairn.common.v1 import common_pb2
from cairn.registry.v1 import registry_pb2, registry_service_pb2
from cairn.tracking.v1 import tracking_pb2, tracking_service_pb2
from cairn_server.common import messages
from cairn_server.common.errors import InvalidArgument


def _refusal(request: object) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as raised:
        messages.check(request)
    return raised.value


def _model(**fields: object) -> registry_service_pb2.CreateRegisteredModelRequest:
    return registry_service_pb2.CreateRegisteredModelRequest(
        registered_model=registry_pb2.RegisteredModel(name="m", **fields)
    )


@pytest.mark.parametrize(
    ("request_message", "field"),
    [
        (tracking_service_pb2.GetRunRequest(run_id="a\x00b"), "run_id"),
        (
            tracking_service_pb2.LogBatchRequest(
                metrics=tracking_pb2.MetricColumns(keys=["ok", "bad\x00"])
            ),
            "metrics.keys[1]",
        ),
        (
            tracking_service_pb2.LogBatchRequest(params=[tracking_pb2.Param(key="k", value="\0")]),
            "params[0].value",
        ),
        (_model(tags={"team": "a\x00"}), "registered_model.tags['team']"),
        (_model(tags={"te\x00am": "a"}), "registered_model.tags.key"),
        (
            _model(custom_properties={"p": common_pb2.Value(string_value="\x00")}),
            "registered_model.custom_properties['p'].string_value",
        ),
    ],
)
def test_a_nul_anywhere_is_an_invalid_string_named_by_its_path(
    request_message: object, field: str
) -> None:
    refusal = _refusal(request_message)
    assert refusal.reason == "INVALID_STRING"
    assert [v.field for v in refusal.violations] == [field]


def test_strings_have_a_length_backstop() -> None:
    fits = "x" * messages.MAX_STRING_CHARS
    messages.check(tracking_service_pb2.GetRunRequest(run_id=fits))
    refusal = _refusal(tracking_service_pb2.GetRunRequest(run_id=fits + "x"))
    assert refusal.reason == "INVALID_STRING"


def test_clean_requests_pass() -> None:
    messages.check(_model(tags={"team": "vision"}, description="multi\nline — ünïcode"))
    messages.check(tracking_service_pb2.LogBatchRequest())


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("0a02c328"),  # run_id holding invalid UTF-8
        # A lone surrogate (U+D800) encoded anyway: no str that reaches a filter or
        # PostgreSQL can hold one.
        bytes.fromhex("0a03eda080"),
        bytes.fromhex("0a05"),  # a string longer than the message
        bytes.fromhex("ff"),  # no valid tag
    ],
)
def test_bytes_that_do_not_decode_become_malformed_message(data: bytes) -> None:
    request = messages.tolerant(tracking_service_pb2.GetRunRequest.FromString)(data)
    assert isinstance(request, messages.Malformed)
    assert _refusal(request).reason == "MALFORMED_MESSAGE"


def test_an_enum_holds_one_of_its_values() -> None:
    refusal = _refusal(
        registry_service_pb2.CreateRegisteredModelRequest(
            registered_model=registry_pb2.RegisteredModel(name="m", state=100_000)
        )
    )
    assert refusal.reason == "INVALID_ARGUMENT"
    assert [v.field for v in refusal.violations] == ["registered_model.state"]
    messages.check(
        registry_service_pb2.CreateRegisteredModelRequest(
            registered_model=registry_pb2.RegisteredModel(
                name="m", state=registry_pb2.State.Value("STATE_ARCHIVED")
            )
        )
    )
