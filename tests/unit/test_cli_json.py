"""What `--output json` makes of the client's types (cli/_output.plain)."""

from cairn.cli._output import plain
from cairn.types import RegisteredModel, Run, RunData, RunInfo, RunStatus


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
    properties = {"timestamp": 0, "end_time": 1_700_000_000, "epochs": 3}
    record = plain(RegisteredModel("m", custom_properties=properties))
    assert record["custom_properties"] == properties
    assert plain(_run("alice", {}))["info"]["start_time"] == "2023-11-14T22:13:20.000Z"
