"""What `--output json` makes of the client's types (cli/_output.plain)."""

import pytest

from cairn.cli._output import _cell, iso_time, plain
from cairn.types import RegisteredModel, Run, RunData, RunInfo, RunStatus
from cairn.types._registry import PropertyValue


def _run(user_id: str, tags: dict[str, str]) -> Run:
    info = RunInfo(
        run_id="a" * 32,
        experiment_id="1",
        run_name="r",
        user_id=user_id,
        status=RunStatus.FINISHED,
        start_time=1_700_000_000_000,
        end_time=None,
        artifact_uri="cairn-artifacts://default/experiments/1/r/artifacts",
        lifecycle_stage="active",
    )
    return Run(info=info, data=RunData(tags=tags))


def test_a_run_without_a_user_has_a_null_user_as_every_absent_value() -> None:
    record = plain(_run("", {}))
    assert record["info"]["user_id"] is None
    assert record["info"]["end_time"] is None and record["info"]["parent_run_id"] is None


def test_a_user_and_an_empty_tag_of_the_same_name_are_kept() -> None:
    record = plain(_run("alice", {"user_id": ""}))
    assert record["info"]["user_id"] == "alice"
    assert record["data"]["tags"] == {"user_id": ""}


def test_times_are_the_types_own_fields_not_keys_of_a_callers_map() -> None:
    """A custom property named like a time field was printed as a time."""
    properties: dict[str, PropertyValue] = {"timestamp": 0, "end_time": 1_700_000_000, "epochs": 3}
    record = plain(RegisteredModel("m", custom_properties=properties))
    assert record["custom_properties"] == properties
    assert plain(_run("alice", {}))["info"]["start_time"] == "2023-11-14T22:13:20.000Z"


@pytest.mark.parametrize(
    ("millis", "shown"),
    [
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
        (-62_135_596_799_999, "0001-01-01T00:00:00.001Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (4_102_444_800_007, "2100-01-01T00:00:00.007Z"),
        (253_402_300_800_000, 253_402_300_800_000),  # past the calendar: the number
    ],
)
def test_a_time_is_shown_to_the_millisecond_it_was_kept(millis: int, shown: str | int) -> None:
    """Divided as a float, a time before 1970 or far ahead came out 1 ms early."""
    assert iso_time(millis) == shown


def test_a_cell_of_several_entries_quotes_what_would_split_them() -> None:
    """A param "cnn, lr=0.1" showed as two params, model=cnn and lr=0.1."""
    params = {"model": "cnn, lr=0.1", 'say "hi"': "plain", "lr": 0.1}
    assert _cell(params) == 'model="cnn, lr=0.1", "say \\"hi\\""=plain, lr=0.1'
    assert _cell(["a=b", "c"]) == '"a=b", c'
