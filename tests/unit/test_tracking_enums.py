"""The store's run statuses and lifecycle stages are numbered as the wire's enums, which
the conversions to messages rely on (they pass the numbers through)."""

from __future__ import annotations

from cairn.tracking.v1 import tracking_pb2 as pb
from cairn_server.tracking import convert
from cairn_server.tracking.model import LifecycleStage, RunInfo, RunStatus


def test_statuses_and_stages_have_the_wire_numbers() -> None:
    for status in RunStatus:
        assert pb.RunStatus.Value(f"RUN_STATUS_{status.name}") == status
    for stage in LifecycleStage:
        assert pb.LifecycleStage.Value(f"LIFECYCLE_STAGE_{stage.name}") == stage


def test_a_run_info_message_names_its_status_and_stage() -> None:
    info = RunInfo(
        "default",
        "a" * 32,
        "1",
        "r",
        "u",
        RunStatus.KILLED,
        5,
        None,
        "",
        LifecycleStage.DELETED,
        None,
    )
    message = convert.run_info(info)
    assert pb.RunStatus.Name(message.status) == "RUN_STATUS_KILLED"
    assert pb.LifecycleStage.Name(message.lifecycle_stage) == "LIFECYCLE_STAGE_DELETED"
