"""Runs and what is logged to them: params, tags, metrics, batches, inputs."""

import math
import time
from collections.abc import Awaitable

import pytest

import cairn
from cairn._headers import REQUEST_ID_HEADER
from cairn.exceptions import FailedPreconditionError, InvalidArgumentError, NotFoundError
from cairn.types import Metric, Param, RunInput, RunStatus, RunTag
from tests.conftest import eventually


async def test_create_run_defaults(tracking: cairn.TrackingClient, experiment_id: str) -> None:
    run = await tracking.create_run(experiment_id, tags={"git": "abc"})
    info = run.info
    assert len(info.run_id) == 32 and int(info.run_id, 16) >= 0
    assert info.run_name  # generated
    assert info.status == RunStatus.RUNNING == "RUNNING"
    assert info.start_time > 0 and info.end_time is None
    assert info.artifact_uri.endswith(f"/experiments/{experiment_id}/{info.run_id}/artifacts")
    assert run.data.tags == {"git": "abc"}


async def test_update_and_terminate(tracking: cairn.TrackingClient, run_id: str) -> None:
    await tracking.update_run(run_id, status="SCHEDULED", name="renamed")
    info = (await tracking.get_run(run_id)).info
    assert (info.status, info.run_name) == (RunStatus.SCHEDULED, "renamed")
    await tracking.set_terminated(run_id, end_time=1234)
    info = (await tracking.get_run(run_id)).info
    assert (info.status, info.end_time) == (RunStatus.FINISHED, 1234)


async def test_update_run_to_a_status_that_ends_a_run_leaves_its_end_time(
    tracking: cairn.TrackingClient, run_id: str
) -> None:
    """update_run changes the status alone, as MLflow's does; set_terminated ends the
    run. Before, UpdateRun stamped now as the end of any ending status given without an
    end time: update_run(status='KILLED') moved the end of a run ended at 1234 to now,
    and gave a running run made FINISHED an end time."""
    await tracking.update_run(run_id, status="FINISHED")
    info = (await tracking.get_run(run_id)).info
    assert (info.status, info.end_time) == (RunStatus.FINISHED, None)
    await tracking.set_terminated(run_id, RunStatus.FAILED, end_time=1234)
    await tracking.update_run(run_id, status="KILLED")
    info = (await tracking.get_run(run_id)).info
    assert (info.status, info.end_time) == (RunStatus.KILLED, 1234)


@pytest.mark.parametrize("time", [-1, -(2**63)])
async def test_a_negative_start_time_is_refused_as_a_negative_end_time_is(
    tracking: cairn.TrackingClient, experiment_id: str, run_id: str, time: int
) -> None:
    """CreateRun stored any negative start_time_ms (-1, or int64's least), which
    UpdateRun refused as an end_time_ms."""
    with pytest.raises(InvalidArgumentError) as refused:
        await tracking.create_run(experiment_id, start_time=time)
    assert refused.value.message == "start_time_ms: must not be negative"
    with pytest.raises(InvalidArgumentError) as refused:
        await tracking.set_terminated(run_id, end_time=time)
    assert refused.value.message == "end_time_ms: must not be negative"
    runs = await tracking.search_runs([experiment_id])
    assert [run.info.run_id for run in runs] == [run_id]


async def test_parent_run_must_exist(
    tracking: cairn.TrackingClient, experiment_id: str, run_id: str
) -> None:
    child = await tracking.create_run(experiment_id, parent_run_id=run_id)
    assert child.info.parent_run_id == run_id
    with pytest.raises(NotFoundError):
        await tracking.create_run(experiment_id, parent_run_id="0" * 32)


async def test_nan_and_infinities_round_trip_exactly(
    tracking: cairn.TrackingClient, run_id: str
) -> None:
    await tracking.log_metric(run_id, "nan", math.nan, timestamp=1, step=0)
    await tracking.log_batch(
        run_id, metrics=[Metric("pos", math.inf, 1, 0), Metric("neg", -math.inf, 1, 0)]
    )
    values = (await tracking.get_run(run_id)).data.metrics
    assert math.isnan(values["nan"])
    assert values["pos"] == math.inf and values["neg"] == -math.inf
    history = await tracking.get_metric_history(run_id, "pos")
    assert [m.value for m in history] == [math.inf]


async def test_latest_metric_is_greatest_step_then_timestamp(
    tracking: cairn.TrackingClient, run_id: str
) -> None:
    await tracking.log_batch(
        run_id,
        metrics=[Metric("m", 1.0, 100, 5), Metric("m", 2.0, 50, 7), Metric("m", 3.0, 10, -1)],
    )
    await tracking.log_metric(run_id, "m", 4.0, timestamp=60, step=7)
    await tracking.log_metric(run_id, "m", 5.0, timestamp=999, step=6)
    latest = (await tracking.get_run(run_id)).data.latest_metrics["m"]
    assert (latest.value, latest.step, latest.timestamp) == (4.0, 7, 60)


async def test_params_are_immutable(tracking: cairn.TrackingClient, run_id: str) -> None:
    await tracking.log_param(run_id, "lr", 0.1)
    await tracking.log_param(run_id, "lr", "0.1")  # the same value again is fine
    with pytest.raises(FailedPreconditionError) as raised:
        await tracking.log_param(run_id, "lr", 0.2)
    assert raised.value.reason == "PARAM_ALREADY_LOGGED"
    assert raised.value.metadata == {"key": "lr", "old_value": "0.1", "new_value": "0.2"}
    assert (await tracking.get_run(run_id)).data.params == {"lr": "0.1"}


async def test_a_batch_with_one_bad_item_stores_nothing(
    tracking: cairn.TrackingClient, run_id: str
) -> None:
    await tracking.log_param(run_id, "model", "cnn")
    with pytest.raises(FailedPreconditionError):
        await tracking.log_batch(
            run_id,
            metrics=[Metric("acc", 0.5, 1, s) for s in range(500)],
            params=[Param("depth", "3"), Param("model", "rnn")],
            tags=[RunTag("note", "x")],
        )
    run = await tracking.get_run(run_id)
    assert run.data.metrics == {} and run.data.tags == {}
    assert run.data.params == {"model": "cnn"}
    assert await tracking.get_metric_history(run_id, "acc") == []


async def test_a_retried_batch_is_applied_once(tracking: cairn.TrackingClient, run_id: str) -> None:
    points = [Metric("loss", float(s), 1, s) for s in range(300)]
    await tracking.log_batch(run_id, metrics=points, request_id="retry-1")
    await tracking.log_batch(run_id, metrics=points, request_id="retry-1")
    assert len(await tracking.get_metric_history(run_id, "loss")) == 300
    await tracking.log_batch(run_id, metrics=points, request_id="retry-2")
    assert len(await tracking.get_metric_history(run_id, "loss")) == 600


async def test_writes_to_a_deleted_run_fail_until_restored(
    tracking: cairn.TrackingClient, run_id: str
) -> None:
    await tracking.delete_run(run_id)
    assert (await tracking.get_run(run_id)).info.lifecycle_stage == "deleted"
    for write in (
        tracking.log_metric(run_id, "m", 1.0),
        tracking.log_param(run_id, "p", "v"),
        tracking.set_tag(run_id, "t", "v"),
        tracking.update_run(run_id, status="FAILED"),
    ):
        with pytest.raises(FailedPreconditionError) as raised:
            await write
        assert raised.value.reason == "RUN_DELETED"
    await tracking.restore_run(run_id)
    await tracking.log_metric(run_id, "m", 1.0)


async def test_tags_set_overwrite_and_delete(tracking: cairn.TrackingClient, run_id: str) -> None:
    await tracking.set_tag(run_id, "k", "1")
    await tracking.log_batch(run_id, tags=[RunTag("k", "2"), RunTag("k", "3"), RunTag("j", "x")])
    assert (await tracking.get_run(run_id)).data.tags == {"j": "x", "k": "3"}
    await tracking.delete_tag(run_id, "k")
    assert (await tracking.get_run(run_id)).data.tags == {"j": "x"}
    with pytest.raises(NotFoundError):
        await tracking.delete_tag(run_id, "k")


async def test_input_lineage(tracking: cairn.TrackingClient, run_id: str) -> None:
    used = [
        RunInput(
            "cairn-artifacts://default/data/train.csv", "artifact", "train", "sha256:ab", "training"
        ),
        RunInput("s3://bucket/eval.parquet", "dataset", "eval"),
    ]
    await tracking.log_inputs(run_id, used)
    await tracking.log_inputs(run_id, used[:1])  # idempotent
    assert sorted((await tracking.get_run(run_id)).inputs, key=lambda i: i.uri) == sorted(
        used, key=lambda i: i.uri
    )


@pytest.mark.parametrize(
    "write",
    [
        lambda t, r: t.log_metric(r, "", 1.0),
        lambda t, r: t.log_metric(r, "k" * 251, 1.0),
        lambda t, r: t.log_metric(r, "tab\tkey", 1.0),
        lambda t, r: t.log_param(r, " padded", "v"),
        lambda t, r: t.log_param(r, "p", "v" * 6001),
        lambda t, r: t.set_tag(r, "t", "v" * 8001),
        lambda t, r: t.log_batch(r, metrics=[Metric("m", 1.0, 1, s) for s in range(100_001)]),
        lambda t, r: t.log_batch(r, params=[Param(f"p{i}", "v") for i in range(1001)]),
        lambda t, r: t.log_batch(r, tags=[RunTag(f"t{i}", "v") for i in range(1001)]),
        lambda t, r: t.log_batch(r, params=[Param("p", "1"), Param("p", "2")]),
        lambda t, r: t.get_metric_history(r, "m", max_points=3),
        lambda t, r: t.get_run("not-hex"),
        lambda t, r: t.log_inputs(r, [RunInput("")]),
    ],
)
async def test_bad_writes_are_refused_and_store_nothing(
    tracking: cairn.TrackingClient, run_id: str, write
) -> None:
    with pytest.raises(InvalidArgumentError):
        await write(tracking, run_id)
    run = await tracking.get_run(run_id)
    assert (run.data.metrics, run.data.params, run.data.tags, run.inputs) == ({}, {}, {}, [])


async def test_unknown_run_is_not_found(tracking: cairn.TrackingClient) -> None:
    with pytest.raises(NotFoundError) as raised:
        await tracking.log_metric("f" * 32, "m", 1.0)
    assert raised.value.reason == "RUN_NOT_FOUND"


async def test_a_number_past_its_fields_bits_is_invalid_naming_the_parameter(
    tracking: cairn.TrackingClient, run_id: str
) -> None:
    """protobuf's own error was a bare ValueError, 'Value out of range', naming none."""
    calls = {
        "step": lambda: tracking.log_metric(run_id, "m", 1.0, step=2**70),
        "timestamp": lambda: tracking.log_metric(run_id, "m", 1.0, timestamp=2**63),
        "max_points": lambda: tracking.get_metric_history(run_id, "m", max_points=2**31),
        "metrics": lambda: tracking.log_batch(run_id, [Metric("m", 1.0, 1, 2**64)]),
    }
    for name, call in calls.items():
        with pytest.raises(InvalidArgumentError) as refused:
            await call()
        assert refused.value.message.startswith(f"{name}: "), refused.value.message


# Text MLflow takes in names that `str.isprintable` refused: other scripts' spaces, the
# joiners of emoji sequences and of Persian spelling, a soft hyphen, a bidi mark.
ONE_LINE_TEXT = [
    "日本\u3000語",
    "10\u202f% sample",
    "a\u00a0b",
    "👩\u200d💻 dev",
    "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian: "I want"
    "co\u00adop",
    "\u05e9\u05dc\u05d5\u05dd\u200f!",  # Hebrew: "hello", a right-to-left mark
    "I \u2764\ufe0f",  # a heart drawn as an emoji: the selector is seen
    "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # a flag, in tags
]


@pytest.mark.parametrize("text", ONE_LINE_TEXT)
async def test_names_and_keys_keep_any_text_on_one_line(
    tracking: cairn.TrackingClient, experiment_id: str, text: str
) -> None:
    named = await tracking.create_experiment(f"{text} {experiment_id}")
    assert (await tracking.get_experiment(named)).name == f"{text} {experiment_id}"
    run_id = (await tracking.create_run(experiment_id, run_name=text)).info.run_id
    await tracking.log_metric(run_id, text, 1.0)
    await tracking.log_param(run_id, text, "v")
    await tracking.set_tag(run_id, text, "v")
    run = await tracking.get_run(run_id)
    assert run.info.run_name == text
    written = (run.data.metrics, run.data.params, run.data.tags)
    assert written == ({text: 1.0}, {text: "v"}, {text: "v"})


INVISIBLE_AT_AN_END = [
    "\ufeffloss",
    "loss\u200b",
    "\u200eloss",
    "loss\u00ad",
    "loss\u3164",  # a Hangul filler
    "loss\uffa0",
    "\u034floss",  # the combining grapheme joiner
    "loss\u2800",  # the blank Braille pattern
    "loss\ufe0f",  # a selector after a letter of ASCII, which has no other form
    "loss\U000e0020",  # a tag outside a flag
]


@pytest.mark.parametrize("text", INVISIBLE_AT_AN_END)
async def test_names_and_keys_refuse_an_invisible_character_at_an_end(
    tracking: cairn.TrackingClient, run_id: str, text: str
) -> None:
    """A byte-order mark a file read left, or a zero-width space pasted along, made a
    key no one could tell from "loss"; a Hangul filler, a blank Braille pattern or a
    selector still did, as `isprintable` takes them for printable characters."""
    for write in (
        lambda: tracking.create_experiment(text),
        lambda: tracking.log_metric(run_id, text, 1.0),
    ):
        with pytest.raises(InvalidArgumentError, match="invisible character"):
            await write()


@pytest.mark.parametrize("text", ["a\tb", "a\nb", "a\x7fb", "a\x85b", "a\u2028b", "a\u2029b"])
async def test_names_and_keys_refuse_control_characters_and_line_breaks(
    tracking: cairn.TrackingClient, run_id: str, text: str
) -> None:
    for write in (
        lambda: tracking.create_experiment(text),
        lambda: tracking.log_metric(run_id, text, 1.0),
        lambda: tracking.update_run(run_id, name=text),
    ):
        with pytest.raises(InvalidArgumentError) as refused:
            await write()
        assert refused.value.reason == "INVALID_ARGUMENT"
        assert "control characters" in refused.value.message


async def test_a_write_repeated_under_its_own_request_id_given_no_time_is_the_same(
    tracking: cairn.TrackingClient, run_id: str, unique: str
) -> None:
    """A job restarted by its scheduler repeats its writes under its own request ids.
    The client stamped a log_metric without timestamp, and a set_terminated without end
    time, with its clock: a millisecond later the repeat was another request,
    INVALID_ARGUMENT REQUEST_ID_REUSED. The server stamps them now, once."""

    def log() -> Awaitable[object]:
        return tracking.log_metric(
            run_id, "loss", 0.5, step=1, metadata=[(REQUEST_ID_HEADER, f"metric-{unique}")]
        )

    def end() -> Awaitable[None]:
        return tracking.set_terminated(
            run_id, RunStatus.FINISHED, metadata=[(REQUEST_ID_HEADER, f"end-{unique}")]
        )

    for write in (log, end):
        await write()
        await _a_millisecond_later()
        await write()
    history = await tracking.get_metric_history(run_id, "loss")
    assert [(m.value, m.step) for m in history] == [(0.5, 1)]
    ended = (await tracking.get_run(run_id)).info
    assert ended.status == RunStatus.FINISHED and ended.end_time is not None
    assert ended.end_time >= history[0].timestamp > 0


async def _a_millisecond_later() -> None:
    """Returns once the clock, in milliseconds, has moved past now's."""
    now = time.time_ns() // 1_000_000
    await eventually(lambda: time.time_ns() // 1_000_000 > now, what="a clock tick")
