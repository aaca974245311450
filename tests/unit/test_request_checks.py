"""The checks every request gets before a handler: it decodes, its strings can be stored."""

from typing import Any

import pytest
from google.protobuf import field_mask_pb2

from cairn.common.v1 import common_pb2
from cairn.registry.v1 import registry_pb2, registry_service_pb2
from cairn.tracking.v1 import tracking_pb2, tracking_service_pb2
from cairn_server.common import messages
from cairn_server.common.errors import InvalidArgument
from cairn_server.tracking.validation import MAX_METRICS_PER_BATCH


def _refusal(request: object) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as raised:
        messages.check(request)
    return raised.value


def _model(**fields: Any) -> registry_service_pb2.CreateRegisteredModelRequest:
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
            registered_model=registry_pb2.RegisteredModel(name="m", state=100_000)  # type: ignore[arg-type]
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


def _one_over(field: str) -> object:
    """A request whose list or map `field` holds one element more than is allowed."""
    over = messages.MAX_ELEMENTS + 1
    if field == "stages":
        return registry_service_pb2.GetLatestModelVersionsRequest(
            stages=[registry_pb2.STAGE_STAGING] * over
        )
    if field == "update_mask.paths":
        return registry_service_pb2.UpdateRegisteredModelRequest(
            update_mask=field_mask_pb2.FieldMask(paths=[""] * over)
        )
    if field == "registered_model.latest_versions":
        return _model(latest_versions=[registry_pb2.ModelVersion()] * over)
    return _model(custom_properties={f"{i:x}": common_pb2.Value() for i in range(over)})


@pytest.mark.parametrize(
    "field",
    [
        "stages",  # enums
        "update_mask.paths",  # strings
        "registered_model.latest_versions",  # messages
        "registered_model.custom_properties",  # a map
    ],
)
def test_a_list_one_element_too_long_is_refused_by_its_path(field: str) -> None:
    refusal = _refusal(_one_over(field))
    assert refusal.reason == "INVALID_ARGUMENT"
    assert [v.field for v in refusal.violations] == [field]
    assert refusal.metadata["limit"] == str(messages.MAX_ELEMENTS)
    assert refusal.metadata["count"] == str(messages.MAX_ELEMENTS + 1)


def test_a_list_is_counted_before_its_elements_are_read() -> None:
    # Each element is bad too: the refusal names the list's length, so none was read.
    bad = registry_pb2.ModelVersion(name="\x00")
    refusal = _refusal(_model(latest_versions=[bad] * (messages.MAX_ELEMENTS + 1)))
    assert refusal.reason == "INVALID_ARGUMENT"
    assert [v.field for v in refusal.violations] == ["registered_model.latest_versions"]
    # Within the limit, the bad element is what is named.
    refusal = _refusal(_model(latest_versions=[bad] * messages.MAX_ELEMENTS))
    assert [v.field for v in refusal.violations] == ["registered_model.latest_versions[0].name"]


def test_a_log_batch_may_carry_as_many_points_as_tracking_takes() -> None:
    assert messages.WIDE_ELEMENTS["cairn.tracking.v1.MetricColumns"] == MAX_METRICS_PER_BATCH
    points = MAX_METRICS_PER_BATCH
    columns = tracking_pb2.MetricColumns(
        keys=[f"k{i}" for i in range(points)],
        key_indexes=range(points),
        values=[0.0] * points,
        steps=[0] * points,
        timestamps_ms=[0] * points,
    )
    most = tracking_service_pb2.LogBatchRequest(
        metrics=columns,
        params=[tracking_pb2.Param(key=f"p{i}", value="v") for i in range(1000)],
        tags=[tracking_pb2.Tag(key=f"t{i}", value="v") for i in range(1000)],
    )
    messages.check(most)  # within the limit of all lists together, too
    columns.values.append(0.0)  # a number column is counted too, though never walked
    refusal = _refusal(tracking_service_pb2.LogBatchRequest(metrics=columns))
    assert [v.field for v in refusal.violations] == ["metrics.values"]
    # The other lists of a LogBatch keep the usual limit.
    params = [tracking_pb2.Param(key="k")] * (messages.MAX_ELEMENTS + 1)
    refusal = _refusal(tracking_service_pb2.LogBatchRequest(params=params))
    assert [v.field for v in refusal.violations] == ["params"]


def test_lists_that_each_fit_are_limited_together() -> None:
    # 100 versions of 1,499 aliases: 150,000 elements, each list within its own limit.
    versions = [registry_pb2.ModelVersion(aliases=[""] * 1499)] * 100
    assert messages.MAX_WALKED_ELEMENTS == 100 * 1500
    request = _model(latest_versions=versions)
    messages.check(request)
    request.registered_model.latest_versions[-1].aliases.append("")
    refusal = _refusal(request)
    assert refusal.reason == "INVALID_ARGUMENT"
    assert refusal.metadata == {"limit": str(messages.MAX_WALKED_ELEMENTS)}
    # Numbers are never walked, so they do not count: only their own limit does.
    points = messages.WIDE_ELEMENTS["cairn.tracking.v1.MetricColumns"]
    numbers = tracking_pb2.MetricColumns(
        keys=["k"], key_indexes=[0] * points, values=[0.0] * points, steps=[0] * points
    )
    messages.check(tracking_service_pb2.LogBatchRequest(metrics=numbers))
