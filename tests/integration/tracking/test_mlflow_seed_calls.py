"""MLflow's tracking calls (seed 002) give MLflow's answers."""

import asyncio
import datetime
import json
import math
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy
import pytest

import cairn
from cairn import sync
from cairn.exceptions import (
    ClientClosedError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from tests.conftest import eventually
from tests.proxy import StallingProxy


def split(table):
    """load_table's answer as MLflow's split dict (a DataFrame when pandas is installed)."""
    if isinstance(table, dict):
        return table
    return json.loads(table.to_json(orient="split", index=False))


async def test_search_experiments_orders_by_several_keys(tracking, unique) -> None:
    for name in ("b", "a", "c"):
        await tracking.create_experiment(f"{unique}-{name}")
    found, token = [], None
    while True:
        page = await tracking.search_experiments(
            max_results=2,
            filter_string=f"name LIKE '{unique}-%'",
            order_by=["name DESC", "creation_time ASC"],
            page_token=token,
        )
        found += [e.name for e in page]
        token = page.token
        if token is None:
            break
    assert found == [f"{unique}-c", f"{unique}-b", f"{unique}-a"]
    with pytest.raises(cairn.exceptions.InvalidArgumentError):
        await tracking.search_experiments(order_by=["name", "name DESC"])


async def test_a_runs_user_is_the_mlflow_user_tag_when_none_is_given(
    tracking, experiment_id
) -> None:
    """MLflow's client takes a new run's user from its mlflow.user tag; Cairn kept the
    tag and left the run's user_id empty."""
    tagged = await tracking.create_run(experiment_id, tags={"mlflow.user": "bob"})
    assert (tagged.info.user_id, tagged.data.tags["mlflow.user"]) == ("bob", "bob")
    given = await tracking.create_run(experiment_id, tags={"mlflow.user": "bob"}, user_id="al")
    assert given.info.user_id == "al"
    assert (await tracking.get_run(tagged.info.run_id)).info.user_id == "bob"


async def test_get_parent_run(tracking, experiment_id) -> None:
    parent = await tracking.create_run(experiment_id)
    child = await tracking.create_run(experiment_id, parent_run_id=parent.info.run_id)
    found = await tracking.get_parent_run(child.info.run_id)
    assert found is not None and found.info.run_id == parent.info.run_id
    assert await tracking.get_parent_run(parent.info.run_id) is None
    # MLflow's own way of naming a parent: the tag mlflow.parentRunId.
    tagged = await tracking.create_run(
        experiment_id, tags={"mlflow.parentRunId": child.info.run_id}
    )
    assert (await tracking.get_parent_run(tagged.info.run_id)).info.run_id == child.info.run_id


async def test_the_parent_is_the_one_the_tag_names_as_the_childrens_search_finds(
    tracking, experiment_id
) -> None:
    """A tag mlflow.parentRunId set later was passed over for the parent the run was made
    with, so get_parent_run named one parent and the search for children, `tags.mlflow.
    parentRunId = '<id>'`, another; MLflow reads the tag."""
    first, second = [(await tracking.create_run(experiment_id)).info.run_id for _ in "ab"]
    child = (await tracking.create_run(experiment_id, parent_run_id=first)).info.run_id
    await tracking.set_tag(child, "mlflow.parentRunId", second)
    found = await tracking.get_parent_run(child)
    assert found is not None and found.info.run_id == second
    children = await tracking.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{second}'")
    assert [r.info.run_id for r in children] == [child]
    await tracking.delete_tag(child, "mlflow.parentRunId")  # the run as it was made
    found = await tracking.get_parent_run(child)
    assert found is not None and found.info.run_id == first


@pytest.mark.parametrize("tag", ["garbage", " " + "0" * 32, "0" * 32])
async def test_a_parent_tag_naming_no_run_is_not_found_naming_the_tag(
    tracking, experiment_id, tag
) -> None:
    """MLflow keeps the tag unchecked, and its get_parent_run answers RUN_NOT_FOUND for
    whatever it holds. A value no run id could be was sent on as the run id, and came
    back INVALID_ARGUMENT about the caller's own `run_id`, which was fine."""
    tagged = await tracking.create_run(experiment_id, tags={"mlflow.parentRunId": tag})
    with pytest.raises(cairn.exceptions.NotFoundError) as raised:
        await tracking.get_parent_run(tagged.info.run_id)
    assert raised.value.reason == "RUN_NOT_FOUND"
    assert "mlflow.parentRunId" in str(raised.value)


async def test_children_made_with_parent_run_id_are_found_as_mlflow_finds_them(
    tracking, experiment_id
) -> None:
    """MLflow keeps a run's parent as the tag mlflow.parentRunId, and finds a run's
    children with tags.mlflow.parentRunId = '<id>' (the seed reads the tag, too). A
    child made with parent_run_id held no such tag: no filter found it."""
    parent = (await tracking.create_run(experiment_id)).info.run_id
    child = await tracking.create_run(experiment_id, parent_run_id=parent)
    assert child.data.tags["mlflow.parentRunId"] == parent
    assert child.info.parent_run_id == parent
    found = await tracking.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )
    assert [r.info.run_id for r in found] == [child.info.run_id]
    same = await tracking.create_run(
        experiment_id, tags={"mlflow.parentRunId": parent.upper()}, parent_run_id=parent
    )
    assert same.data.tags["mlflow.parentRunId"] == parent
    with pytest.raises(cairn.exceptions.InvalidArgumentError) as refused:
        await tracking.create_run(
            experiment_id, tags={"mlflow.parentRunId": child.info.run_id}, parent_run_id=parent
        )
    assert "parent_run_id" in refused.value.message


async def test_synchronous_false_returns_at_once_and_can_be_waited_for(tracking, run_id) -> None:
    operations = [
        await tracking.log_metric(run_id, "loss", 0.5 - step / 10, step=step, synchronous=False)
        for step in range(5)
    ]
    # Nothing was sent yet: the call returned before its write went out.
    assert not any(operation.done() for operation in operations)
    operations.append(await tracking.log_param(run_id, "lr", 0.1, synchronous=False))
    operations.append(await tracking.set_tag(run_id, "team", "growth", synchronous=False))
    for operation in operations:
        await operation.wait()
    run = await tracking.get_run(run_id)
    assert run.data.params == {"lr": "0.1"} and run.data.tags["team"] == "growth"
    assert len(await tracking.get_metric_history(run_id, "loss")) == 5
    # synchronous=None and True wait for the write, as MLflow does by default.
    assert await tracking.log_metric(run_id, "acc", 0.9, synchronous=True) is None
    assert await tracking.log_param(run_id, "depth", 3) == 3


async def test_flush_async_logging_waits_for_every_write_and_reports_errors(
    tracking, run_id
) -> None:
    await tracking.log_batch(run_id, [cairn.types.Metric("m", 1.0, 0, 0)], synchronous=False)
    await tracking.log_param(run_id, "p", "1", synchronous=False)
    await tracking.flush_async_logging()
    assert (await tracking.get_run(run_id)).data.params["p"] == "1"
    failing = await tracking.log_param(run_id, "p", "2", synchronous=False)
    # Writes are sent in order: once a later one has ended, the failing one has too.
    await (await tracking.set_tag(run_id, "after", "1", synchronous=False)).wait()
    assert failing.done()
    # A write that failed before the flush began is reported by the flush, once.
    with pytest.raises(cairn.exceptions.FailedPreconditionError):
        await tracking.flush_async_logging()
    await tracking.flush_async_logging()


async def test_an_error_raised_by_wait_is_not_raised_again_by_flush(tracking, run_id) -> None:
    await tracking.log_param(run_id, "p", "1")
    failing = await tracking.log_param(run_id, "p", "2", synchronous=False)
    with pytest.raises(cairn.exceptions.FailedPreconditionError):
        await failing.wait()
    await tracking.flush_async_logging()


async def _failed_writes(tracking, run_id, count: int) -> None:
    """count writes with synchronous=False to a deleted run, their handles dropped,
    once all have failed."""
    for step in range(count):
        last = await tracking.log_metric(run_id, "m", float(step), step=step, synchronous=False)
    await eventually(last.done, what="the writes sent")


def _client_memory() -> int:
    """The bytes traced in the client's and gRPC's modules."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, "*/cairn/*"), tracemalloc.Filter(True, "*/grpc/*")]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


async def test_failed_writes_never_flushed_do_not_fill_memory(tracking, run_id) -> None:
    """Each write with synchronous=False that failed was kept until a flush, its error's
    traceback holding its gRPC call, metadata and request: writes to a run deleted
    mid-training, never flushed, took a client from 49 to 601 MB in 20,000 writes. The
    queue counts them and keeps the first error; the flush notes how many more failed."""
    await tracking.delete_run(run_id)
    tracemalloc.start()
    try:
        await _failed_writes(tracking, run_id, 500)
        before = _client_memory()
        await _failed_writes(tracking, run_id, 2000)
        grown = _client_memory() - before
    finally:
        tracemalloc.stop()
    # Kept, 2,000 failed writes held 9 MB here.
    assert grown < 512 * 1024, f"2,000 more failed writes kept {grown} bytes"
    with pytest.raises(FailedPreconditionError) as raised:
        await tracking.flush_async_logging()
    assert raised.value.reason == "RUN_DELETED"
    assert raised.value.__notes__ == ["2499 more writes queued with synchronous=False failed"]
    await tracking.flush_async_logging()


async def test_a_write_s_wait_raises_its_own_error_which_the_flush_then_does_not_count(
    tracking, run_id
) -> None:
    """A write's wait() raises its own error, and the flush then raises the first of
    the others, noting how many more failed: it said nothing of them before."""
    await tracking.delete_run(run_id)
    first = await tracking.log_param(run_id, "p", "1", synchronous=False)
    await tracking.log_param(run_id, "q", "1", synchronous=False)
    own = await tracking.log_param(run_id, "r", "1", synchronous=False)
    await eventually(own.done, what="the writes sent")
    with pytest.raises(FailedPreconditionError) as raised:
        await own.wait()
    with pytest.raises(FailedPreconditionError) as flushed:
        await tracking.flush_async_logging()
    assert flushed.value is not raised.value
    assert flushed.value.__notes__ == ["1 more writes queued with synchronous=False failed"]
    with pytest.raises(FailedPreconditionError) as waited:
        await first.wait()
    assert waited.value is flushed.value
    await tracking.flush_async_logging()


async def test_synchronous_false_writes_land_in_the_order_they_were_made(tracking, run_id) -> None:
    for i in range(30):
        await tracking.set_tag(run_id, "t", str(i), synchronous=False)
    await tracking.flush_async_logging()
    assert (await tracking.get_run(run_id)).data.tags["t"] == "29"


async def test_close_sends_the_background_writes_first(server_port, tracking, run_id) -> None:
    client = cairn.TrackingClient.insecure_connection("127.0.0.1", server_port)
    operations = await client.log_param(run_id, "p", "1", synchronous=False)
    await client.close()
    assert operations.done()
    assert (await tracking.get_run(run_id)).data.params == {"p": "1"}
    with pytest.raises(ClientClosedError):
        await client.log_param(run_id, "q", "1", synchronous=False)


async def test_close_sends_the_background_writes_of_every_projects_client_first(
    server_port, tracking, run_id
) -> None:
    """Each client flushed its own queue: closing the channel from the parent dropped
    the writes a client of another project had queued."""
    client = cairn.TrackingClient.insecure_connection("127.0.0.1", server_port)
    same = client.for_project(client.project)  # another client object on the channel
    operations = [await same.set_tag(run_id, f"t{i}", "1", synchronous=False) for i in range(20)]
    await client.close()
    assert all(operation is not None and operation.done() for operation in operations)
    assert len((await tracking.get_run(run_id)).data.tags) == 20


async def test_writes_left_queued_as_asyncio_run_ends_are_reported(server_port, run_id) -> None:
    """asyncio.run cancels every task left as it ends, the queue's with them: 201 writes
    never sent, and nothing said (exit code 0, stderr empty)."""
    script = """
import asyncio, sys
import cairn

async def main(port, run_id):
    tracking = cairn.TrackingClient.insecure_connection("127.0.0.1", port)
    for step in range(200):
        await tracking.log_metric(run_id, "loss", 0.5, step=step, synchronous=False)
    await tracking.log_param(run_id, "lr", "0.1", synchronous=False)

asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
"""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script, str(server_port), run_id],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "201 writes queued with synchronous=False were not sent" in done.stderr


async def test_close_fails_the_queued_writes_at_once_when_the_server_does_not_answer(
    server_port, experiment_id
) -> None:
    """Each queued write waited its whole deadline in turn: 6 writes kept close() 12 s at
    a 2 s timeout (100 at the 30 s default: 50 minutes)."""
    proxy = StallingProxy("127.0.0.1", server_port)
    port = await proxy.start()
    client = cairn.TrackingClient.insecure_connection("127.0.0.1", port, timeout=1.0)
    try:
        run_id = (await client.create_run(experiment_id)).info.run_id
        proxy.stall()
        operations = [
            await client.log_metric(run_id, "loss", 1.0, step=step, synchronous=False)
            for step in range(6)
        ]
        began = time.monotonic()
        with pytest.raises(DeadlineExceededError) as raised:
            await client.close()
        assert time.monotonic() - began < 3.0
        assert raised.value.__notes__ == ["5 more writes queued with synchronous=False failed"]
        for later in operations[1:]:
            assert later is not None
            with pytest.raises(DeadlineExceededError, match="not sent"):
                await later.wait()
    finally:
        proxy.resume()
        await proxy.close()


async def test_log_image_stores_pngs_as_mlflow_does(tracking, run_id, tmp_path) -> None:
    image = numpy.zeros((4, 3, 3), dtype=numpy.uint8)
    image[0, 0] = (255, 0, 0)
    await tracking.log_image(run_id, image, "plots/red.png")
    written = await tracking.download_artifacts(run_id, "plots/red.png", tmp_path)
    data = Path(written).read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert int.from_bytes(data[16:20], "big") == 3 and int.from_bytes(data[20:24], "big") == 4
    await tracking.log_image(run_id, numpy.ones((2, 2)), key="dogs/big", step=3)
    (listed,) = [f for f in await tracking.list_artifacts(run_id, "images") if "png" in f.path]
    assert listed.path.startswith("images/dogs#big%step%3%timestamp%")
    assert (await tracking.get_run(run_id)).data.tags["mlflow.loggedImages"] == "True"
    with pytest.raises(TypeError):
        await tracking.log_image(run_id, image, "x.png", key="k")
    with pytest.raises(ValueError):
        await tracking.log_image(run_id, image, "x.jpg")  # JPEG needs Pillow


@pytest.mark.parametrize(("step", "timestamp"), [("abc", None), (False, None), (1, "now")])
async def test_log_image_refuses_a_step_or_time_that_is_no_number(
    tracking, run_id, step, timestamp
) -> None:
    """Both went into the file's name as given: images/k%step%abc%... and %step%0 for
    False."""
    with pytest.raises(InvalidArgumentError, match=r"step|timestamp"):
        await tracking.log_image(
            run_id, numpy.ones((2, 2)), key="k", step=step, timestamp=timestamp
        )
    assert await tracking.list_artifacts(run_id, "images") == []


def pixels(data: bytes) -> list[list[int]]:
    """The rows of a grey 8-bit PNG written without filters, read with zlib."""
    position, idat, width = 8, b"", 0
    while position < len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            width = int.from_bytes(body[:4], "big")
            assert body[8:10] == b"\x08\x00"  # 8 bits, grey
        elif kind == b"IDAT":
            idat += body
        position += 12 + length
    raw = zlib.decompress(idat)
    rows = [raw[i : i + width + 1] for i in range(0, len(raw), width + 1)]
    assert all(row[0] == 0 for row in rows)  # no filter
    return [list(row[1:]) for row in rows]


async def test_log_image_converts_pixels_as_mlflow_does(tracking, run_id, tmp_path) -> None:
    async def logged(image, name: str) -> list[list[int]]:
        await tracking.log_image(run_id, image, f"{name}.png")
        written = await tracking.download_artifacts(run_id, f"{name}.png", tmp_path)
        return pixels(Path(written).read_bytes())

    # x * 255 then astype(uint8): truncated, not rounded.
    assert await logged(numpy.array([[0.5, 0.999], [1.0, 0.0]]), "floats") == [
        [127, 254],
        [255, 0],
    ]
    with pytest.warns(UserWarning, match="min/max"):
        scaled = await logged(numpy.array([[-1.0, 1.0], [3.0, 0.0]]), "scaled")
    assert scaled == [[0, 127], [255, 63]]
    assert await logged(numpy.array([[True, False]]), "mask") == [[255, 0]]
    assert await logged(numpy.array([[0, 200]], dtype=numpy.int64), "ints") == [[0, 200]]
    with pytest.raises(ValueError, match="NaN"):
        await tracking.log_image(run_id, numpy.array([[0.5, numpy.nan]]), "nan.png")
    with pytest.raises(TypeError, match="complex"):
        await tracking.log_image(run_id, numpy.array([[1j]]), "complex.png")
    with pytest.raises(ValueError, match="integer"):
        await tracking.log_image(run_id, numpy.array([[256]]), "big.png")


async def test_log_table_and_load_table_in_mlflows_split_format(
    tracking, experiment_id, tmp_path
) -> None:
    first = (await tracking.create_run(experiment_id)).info.run_id
    second = (await tracking.create_run(experiment_id)).info.run_id
    table = {"inputs": ["What is MLflow?", "What is Databricks?"], "toxicity": [0.0, 0.5]}
    await tracking.log_table(first, data=table, artifact_file="qabot_eval_results.json")
    await tracking.log_table(
        first, {"inputs": "And Cairn?", "toxicity": 0.1}, "qabot_eval_results.json"
    )
    await tracking.log_table(second, table, "qabot_eval_results.json")
    written = await tracking.download_artifacts(first, "qabot_eval_results.json", tmp_path)
    assert json.loads(Path(written).read_text()) == {
        "columns": ["inputs", "toxicity"],
        "data": [["What is MLflow?", 0.0], ["What is Databricks?", 0.5], ["And Cairn?", 0.1]],
    }
    tags = (await tracking.get_run(first)).data.tags
    assert json.loads(tags["mlflow.loggedArtifacts"]) == [
        {"path": "qabot_eval_results.json", "type": "table"}
    ]
    loaded = split(
        await tracking.load_table(
            experiment_id, "qabot_eval_results.json", run_ids=[first], extra_columns=["run_id"]
        )
    )
    assert loaded["columns"] == ["inputs", "toxicity", "run_id"]
    assert [row[2] for row in loaded["data"]] == [first] * 3
    everything = split(await tracking.load_table(experiment_id, "qabot_eval_results.json"))
    assert len(everything["data"]) == 5
    with pytest.raises(NotFoundError):
        await tracking.load_table(experiment_id, "missing.json")
    with pytest.raises(ValueError):
        await tracking.log_table(first, table, "bad,name.json")


async def test_a_table_file_is_normalised_as_any_artifact_file(tracking, experiment_id) -> None:
    """As log_text's: "./t.json" and "d//t.json" were refused (INVALID_PATH, naming
    `path`). One table, however its name is spelt, in the file and in the run's tag."""
    run_id = (await tracking.create_run(experiment_id)).info.run_id
    for name, value in (("./t.json", 1), ("/t.json", 2), ("t.json", 3), ("d//t.json", 4)):
        await tracking.log_table(run_id, {"x": [value]}, name)
    assert split(await tracking.load_table(experiment_id, "t.json"))["data"] == [[1], [2], [3]]
    assert split(await tracking.load_table(experiment_id, "./d/t.json"))["data"] == [[4]]
    tags = (await tracking.get_run(run_id)).data.tags
    assert json.loads(tags["mlflow.loggedArtifacts"]) == [
        {"path": "t.json", "type": "table"},
        {"path": "d/t.json", "type": "table"},
    ]


async def test_log_table_makes_the_rows_pandas_makes_of_a_dict(tracking, run_id, tmp_path) -> None:
    """MLflow's log_table builds pd.DataFrame(data). Only a list counted as a column:
    tuples were one row of two lists, a range one row of its repr, and a scalar beside
    a list one row instead of repeated on each."""
    tables = {
        "tuples.json": {"x": (1, 2), "y": (3, 4)},
        "broadcast.json": {"x": [1, 2], "y": "same"},
        "range.json": {"x": range(3)},
        "array.json": {"x": numpy.array([0.5, 1.5]), "y": numpy.int64(7)},
    }
    for name, data in tables.items():
        await tracking.log_table(run_id, data, name)

    async def rows(name: str) -> list[list[object]]:
        written = await tracking.download_artifacts(run_id, name, tmp_path)
        return json.loads(Path(written).read_text())["data"]

    assert await rows("tuples.json") == [[1, 3], [2, 4]]
    assert await rows("broadcast.json") == [[1, "same"], [2, "same"]]
    assert await rows("range.json") == [[0], [1], [2]]
    assert await rows("array.json") == [[0.5, 7], [1.5, 7]]
    with pytest.raises(InvalidArgumentError, match="same length"):
        await tracking.log_table(run_id, {"x": (1, 2), "y": [1, 2, 3]}, "uneven.json")
    with pytest.raises(TypeError, match="set or an iterator"):
        await tracking.log_table(run_id, {"x": {1, 2}}, "set.json")


async def test_load_table_adds_extra_columns_from_the_runs_search_row_as_mlflow_does(
    tracking, experiment_id
) -> None:
    """MLflow's load_table takes an extra column from the run's row of search_runs.
    A column the table already had was refused (MLflow adds `<name>_`, with a warning),
    metrics.<key> and params.<key> were None, status was a RunStatus and the times
    milliseconds, not the string and UTC datetimes MLflow gives."""
    run_id = (await tracking.create_run(experiment_id)).info.run_id
    await tracking.log_param(run_id, "lr", 0.1)
    await tracking.log_metric(run_id, "loss", 0.5)
    await tracking.log_table(run_id, {"run_id": ["given"], "x": [1]}, "eval.json")
    await tracking.set_terminated(run_id)
    info = (await tracking.get_run(run_id)).info
    columns = ["run_id", "params.lr", "metrics.loss", "metrics.never", "tags.never"]
    columns += ["status", "start_time", "end_time"]
    with pytest.warns(UserWarning, match="run_id already exists"):
        loaded = await tracking.load_table(experiment_id, "eval.json", extra_columns=columns)
    table = loaded if isinstance(loaded, dict) else loaded.to_dict(orient="split", index=False)
    [row] = [dict(zip(table["columns"], cells, strict=True)) for cells in table["data"]]

    def utc(milliseconds: int) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(milliseconds / 1000, datetime.UTC)

    assert row == {
        "run_id": "given",
        "x": 1,
        "run_id_": run_id,
        "params.lr": "0.1",
        "metrics.loss": 0.5,
        "metrics.never": pytest.approx(math.nan, nan_ok=True),
        "tags.never": None,
        "status": "FINISHED",
        "start_time": utc(info.start_time),
        "end_time": utc(info.end_time),
    }
    assert type(row["status"]) is str
    with pytest.raises(InvalidArgumentError, match="'lr' is no column"):
        await tracking.load_table(experiment_id, "eval.json", extra_columns=["lr"])


async def test_load_table_keeps_a_run_time_past_the_year_9999_as_its_number(
    tracking, experiment_id
) -> None:
    """The server keeps any time of 64 bits; one past what a datetime holds raised a bare
    OverflowError and no run's table could be read with the column."""
    run_id = (await tracking.create_run(experiment_id)).info.run_id
    await tracking.log_table(run_id, {"x": [1]}, "far.json")
    await tracking.set_terminated(run_id, end_time=253_402_300_800_000)  # the year 10000
    loaded = await tracking.load_table(experiment_id, "far.json", extra_columns=["end_time"])
    table = loaded if isinstance(loaded, dict) else loaded.to_dict(orient="split", index=False)
    assert table["data"] == [[1, 253_402_300_800_000]]


async def test_load_table_of_runs_given_as_a_generator(tracking, experiment_id) -> None:
    """The run ids were read once per run of the experiment: a generator was used up
    by the first run looked at, so the table of 3 runs came back with 1 run's rows, or,
    the first run not being asked for, raised NotFoundError."""
    runs = [(await tracking.create_run(experiment_id)).info.run_id for _ in range(3)]
    for run in runs:
        await tracking.log_table(run, {"run": [run]}, "t.json")
    await tracking.create_run(experiment_id)  # not asked for
    table = split(await tracking.load_table(experiment_id, "t.json", (run for run in runs)))
    assert sorted(row[0] for row in table["data"]) == sorted(runs)


async def test_log_table_keeps_every_row_of_appends_made_at_once(tracking, experiment_id) -> None:
    run_id = (await tracking.create_run(experiment_id)).info.run_id
    await asyncio.gather(
        *(tracking.log_table(run_id, {"a": [i]}, "same.json") for i in range(5)),
        tracking.log_table(run_id, {"a": [0]}, "other.json"),
    )
    table = split(await tracking.load_table(experiment_id, "same.json", run_ids=[run_id]))
    assert sorted(row[0] for row in table["data"]) == [0, 1, 2, 3, 4]
    logged = json.loads((await tracking.get_run(run_id)).data.tags["mlflow.loggedArtifacts"])
    assert sorted(entry["path"] for entry in logged) == ["other.json", "same.json"]


async def test_log_table_keeps_every_row_of_one_file_named_two_ways_or_by_two_clients(
    tracking, experiment_id
) -> None:
    """The lock was the client object's, by the name as given: appends of "t.json"
    and "/t.json" (one file), or through a for_project client, lost rows."""
    run_id = (await tracking.create_run(experiment_id)).info.run_id
    other = tracking.for_project(tracking.project)
    await asyncio.gather(
        *(
            (tracking if i % 3 else other).log_table(
                run_id, {"a": [i]}, ["t.json", "/t.json"][i % 2]
            )
            for i in range(12)
        )
    )
    table = split(await tracking.load_table(experiment_id, "t.json", run_ids=[run_id]))
    assert sorted(row[0] for row in table["data"]) == list(range(12))


class Frame:
    """What log_table reads of a pandas DataFrame (pandas is not installed here), whose
    to_json(orient="split") writes a column name as often as the frame has it."""

    def __init__(self, columns: list[str], data: list[list[object]]) -> None:
        self.columns, self.data = columns, data

    def to_json(self, **_: object) -> str:
        return json.dumps({"columns": self.columns, "data": self.data})


async def stored(tracking, run_id: str, name: str, tmp_path: Path) -> object:
    """The file at name, parsed as strict JSON (NaN and Infinity are no JSON)."""
    written = await tracking.download_artifacts(run_id, name, tmp_path)

    def refuse(constant: str) -> object:
        raise AssertionError(f"{constant} is no JSON")

    return json.loads(Path(written).read_text(), parse_constant=refuse)


async def test_a_duplicate_column_name_is_combined_by_position_or_refused(
    tracking, experiment_id, tmp_path
) -> None:
    """Rows were combined by column name, keeping the last cell of each name: a row
    [1, 2] under ["a", "a"] was stored and loaded as [2, 2], and a row under ["a"]
    appended to it as [3, 3]."""
    run_id = (await tracking.create_run(experiment_id)).info.run_id
    duplicated = json.dumps({"columns": ["a", "a"], "data": [[1, 2]]})
    await tracking.log_text(run_id, duplicated, "dup.json")
    with pytest.raises(InvalidArgumentError, match=r"dup\.json.*duplicate column names"):
        await tracking.log_table(run_id, {"a": [3]}, "dup.json")
    assert await stored(tracking, run_id, "dup.json", tmp_path) == json.loads(duplicated)
    for _ in range(2):
        await tracking.log_table(run_id, Frame(["x", "x"], [[1, 2]]), "frame.json")
    framed = {"columns": ["x", "x"], "data": [[1, 2], [1, 2]]}
    assert await stored(tracking, run_id, "frame.json", tmp_path) == framed
    other = (await tracking.create_run(experiment_id)).info.run_id
    await tracking.log_table(other, Frame(["x", "x"], [[3, 4]]), "frame.json")
    loaded = split(await tracking.load_table(experiment_id, "frame.json"))
    assert sorted(loaded["data"]) == [[1, 2], [1, 2], [3, 4]]
    await tracking.log_table(other, {"x": [5]}, "mixed.json")
    await tracking.log_table(run_id, Frame(["x", "x"], [[1, 2]]), "mixed.json")
    with pytest.raises(InvalidArgumentError, match=r"mixed\.json.*duplicate column names"):
        await tracking.load_table(experiment_id, "mixed.json")


async def test_log_table_refuses_a_table_the_runs_tag_cannot_list(tracking, run_id) -> None:
    """The file was stored, then the tag listing the run's tables was refused for its
    length with an error naming `tag[0]`: load_table did not find the file, and a
    retry appended the rows a second time."""
    listed = [{"path": "p" * 7960 + ".json", "type": "table"}]  # 7,996 characters
    await tracking.set_tag(run_id, "mlflow.loggedArtifacts", json.dumps(listed))
    for _ in range(2):
        with pytest.raises(InvalidArgumentError, match=r"t\.json.*8000") as refused:
            await tracking.log_table(run_id, {"a": [1]}, "t.json")
        assert refused.value.field_violations[0][0] == "artifact_file"
    assert await tracking.list_artifacts(run_id) == []
    tags = (await tracking.get_run(run_id)).data.tags
    assert json.loads(tags["mlflow.loggedArtifacts"]) == listed


async def test_a_run_tagged_before_its_table_is_stored_adds_no_rows_yet(
    tracking, experiment_id
) -> None:
    """log_table tags the run before it stores the file, so that a retry after a
    failed upload appends the rows once. A run so tagged whose file is not (yet)
    stored made load_table of the whole experiment raise NotFoundError."""
    run_id = (await tracking.create_run(experiment_id)).info.run_id
    await tracking.log_table(run_id, {"x": [1]}, "t.json")
    interrupted = (await tracking.create_run(experiment_id)).info.run_id
    listed = json.dumps([{"path": "t.json", "type": "table"}])
    await tracking.set_tag(interrupted, "mlflow.loggedArtifacts", listed)
    assert split(await tracking.load_table(experiment_id, "t.json"))["data"] == [[1]]
    with pytest.raises(NotFoundError, match=r"t\.json"):
        await tracking.load_table(experiment_id, "t.json", run_ids=[interrupted])
    await tracking.log_table(interrupted, {"x": [2]}, "t.json")
    loaded = split(await tracking.load_table(experiment_id, "t.json"))
    assert sorted(loaded["data"]) == [[1], [2]]
    tags = (await tracking.get_run(interrupted)).data.tags
    assert tags["mlflow.loggedArtifacts"] == listed


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        '{"columns": "a", "data": []}',
        '{"columns": ["a"]}',
        '{"columns": ["a"], "data": [1]}',
        '{"columns": ["a"], "data": [[1, 2]]}',
        '{"columns": ["a", "b"], "data": [[1]]}',
    ],
)
async def test_a_stored_file_that_is_no_table_is_a_failed_precondition(
    tracking, experiment_id, run_id, text
) -> None:
    """Both calls raised what json.loads or zip raised: JSONDecodeError, TypeError or
    ValueError, naming no file."""
    await tracking.log_text(run_id, text, "t.json")
    with pytest.raises(FailedPreconditionError, match=r"t\.json.*split") as refused:
        await tracking.log_table(run_id, {"a": [3]}, "t.json")
    assert refused.value.reason == "INVALID_TABLE"
    listed = json.dumps([{"path": "t.json", "type": "table"}])
    await tracking.set_tag(run_id, "mlflow.loggedArtifacts", listed)
    with pytest.raises(FailedPreconditionError, match=r"t\.json.*split"):
        await tracking.load_table(experiment_id, "t.json")


async def test_log_table_writes_non_finite_cells_as_null_as_pandas_does(
    tracking, run_id, tmp_path
) -> None:
    """They were written as NaN and Infinity, which are no JSON: MLflow's UI, which
    reads the file with JSON.parse, showed no table."""
    await tracking.log_table(
        run_id, {"x": [1.5, math.nan, math.inf], "y": numpy.array([-numpy.inf, 0, 1])}, "f.json"
    )
    await tracking.log_table(run_id, {"x": math.nan, "y": [[math.inf, 2]]}, "f.json")
    assert await stored(tracking, run_id, "f.json", tmp_path) == {
        "columns": ["x", "y"],
        "data": [[1.5, None], [None, 0.0], [None, 1.0], [None, [None, 2]]],
    }


async def test_log_table_writes_odd_cells_or_refuses_them_clearly(
    tracking, experiment_id, run_id, tmp_path
) -> None:
    """A NaN key in a dict cell, stored as "NaN" before NaN cells became null, raised a
    bare ValueError, and a tuple key a bare TypeError; lists nested 600 deep around a
    NaN a bare RecursionError; a cell holding itself a bare ValueError; an empty table
    was stored as one empty row, which a later append made a row of None."""
    cell = {math.nan: 1, "b": math.inf, (1, 2): "t"}
    await tracking.log_table(run_id, {"a": [cell]}, "keys.json")
    stored_keys = await stored(tracking, run_id, "keys.json", tmp_path)
    assert stored_keys == {"columns": ["a"], "data": [[{"NaN": 1, "b": None, "(1, 2)": "t"}]]}
    deep: list[object] = [math.nan]
    for _ in range(600):
        deep = [deep]
    await tracking.log_table(run_id, {"a": [deep]}, "deep.json")
    itself: list[object] = [math.nan]
    itself.append(itself)
    with pytest.raises(InvalidArgumentError, match="cannot be written as JSON"):
        await tracking.log_table(run_id, {"a": [itself]}, "itself.json")
    await tracking.log_table(run_id, {}, "empty.json")
    await tracking.log_table(run_id, {"a": [1]}, "empty.json")
    loaded = split(await tracking.load_table(experiment_id, "empty.json"))
    assert loaded["data"] == [[1]]


@pytest.mark.parametrize("shape", [(5, 0), (5, 0, 3), (0, 5), (0, 0)])
async def test_log_image_refuses_an_image_without_pixels(tracking, run_id, shape) -> None:
    """A width of 0 stored a PNG no reader opens; a height of 0 raised a bare
    ValueError from reshape."""
    with pytest.raises(InvalidArgumentError, match="at least one pixel"):
        await tracking.log_image(run_id, numpy.zeros(shape, dtype=numpy.uint8), "empty.png")
    with pytest.raises(InvalidArgumentError, match="at least one pixel"):
        await tracking.log_image(run_id, numpy.zeros(shape), key="empty")
    assert await tracking.list_artifacts(run_id) == []


async def test_synchronous_false_under_the_sync_facade(server_port, experiment_id) -> None:
    def scenario() -> None:
        with sync.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking:
            run_id = tracking.create_run(experiment_id).info.run_id
            operations = tracking.log_metric(run_id, "loss", 0.25, step=1, synchronous=False)
            operations.wait()
            tracking.log_param(run_id, "lr", "0.1", synchronous=False)
            tracking.flush_async_logging()
            run = tracking.get_run(run_id)
            assert run.data.metrics == {"loss": 0.25} and run.data.params == {"lr": "0.1"}

    await asyncio.to_thread(scenario)


async def test_the_one_entry_point_sends_background_writes_before_closing(
    server_port, tracking, run_id
) -> None:
    client = cairn.Client(f"http://127.0.0.1:{server_port}")
    operations = await client.tracking.log_param(run_id, "p", "1", synchronous=False)
    await client.close()
    assert operations.done()
    assert (await tracking.get_run(run_id)).data.params == {"p": "1"}


async def test_view_types_and_key_expirations_are_taken_by_name_in_any_case(
    tracking, experiment_id, run_id, server_port: int
) -> None:
    """As MLflow's ViewType.from_string. They were refused with a message naming the same
    name as a choice: "'ALL' is not one of ACTIVE_ONLY (1), DELETED_ONLY (2), ALL (3)"."""
    await tracking.delete_run(run_id)
    for view, found in (("ALL", [run_id]), ("active_only", []), ("Deleted_Only", [run_id])):
        runs = await tracking.search_runs([experiment_id], run_view_type=view)
        assert [run.info.run_id for run in runs] == found, view
    experiments = await tracking.search_experiments(view_type="all")
    assert experiment_id in [e.experiment_id for e in experiments]
    async with cairn.AuthClient.insecure_connection("127.0.0.1", server_port) as auth:
        await auth.create_user_api_key(f"named-{run_id}", "k", "thirty_days")
        (key,) = await auth.get_user_api_keys(f"named-{run_id}")
    assert key.expire_time is not None and key.create_time is not None
    assert key.expire_time - key.create_time == 30 * 24 * 3600 * 1000


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda t, e, r: t.set_terminated(r, status="DONE"), "status"),
        (lambda t, e, r: t.update_run(r, status="done"), "status"),
        (lambda t, e, r: t.search_runs([e], run_view_type=7), "run_view_type"),
        (lambda t, e, r: t.search_experiments(view_type=0), "view_type"),
    ],
)
async def test_a_bad_enum_argument_is_an_invalid_argument_error_naming_it(
    tracking, experiment_id, run_id, call, argument: str
) -> None:
    """docs/client.md: every failure is a CairnError. An unknown status or view type
    raised a bare ValueError, with no code, reason or field."""
    with pytest.raises(InvalidArgumentError) as raised:
        await call(tracking, experiment_id, run_id)
    assert isinstance(raised.value, ValueError)
    assert [field for field, _ in raised.value.field_violations] == [argument]
    assert (await tracking.get_run(run_id)).info.status == "RUNNING"
