"""search_runs_table: every run a search finds as one table of numpy columns."""

import math
from typing import Any

import numpy as np
import pytest

import cairn
from cairn._clients import run_tables
from cairn.tracking.v1 import tracking_service_pb2 as api
from cairn.types import Metric, Param, RunTag
from cairn.types._run_table import RunTable


@pytest.fixture
async def runs(tracking: cairn.TrackingClient, experiment_id: str) -> list[str]:
    """Five runs, some with a metric that is NaN or infinite, some without it, one not
    ended, params and tags on some."""
    logged: list[tuple[dict[str, float], dict[str, str], dict[str, str]]] = [
        ({"acc": 0.9, "loss": 0.1}, {"model": "cnn"}, {"team": "x"}),
        ({"acc": math.nan}, {"model": "rnn", "lr": "0.1"}, {}),
        ({"loss": math.inf}, {}, {"team": "y"}),
        ({}, {}, {}),
        ({"acc": 0.5}, {"model": "cnn"}, {}),
    ]
    ids = []
    for n, (metrics, params, tags) in enumerate(logged):
        run = await tracking.create_run(experiment_id, start_time=1_700_000_000_000 + n)
        await tracking.log_batch(
            run.info.run_id,
            metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        if n != 3:
            await tracking.set_terminated(run.info.run_id, end_time=1_800_000_000_000 + n)
        ids.append(run.info.run_id)
    return ids


def _rows(table: dict[str, np.ndarray]) -> list[dict[str, str]]:
    """The table's rows, each cell as text (NaN, NaT and None included, so that rows
    compare) and ordered by column."""
    length = len(table["run_id"])
    assert all(len(column) == length for column in table.values())
    return [{name: repr(column[i]) for name, column in table.items()} for i in range(length)]


def _expected(run: Any, keys: dict[str, list[str]]) -> dict[str, str]:
    info, data = run.info, run.data
    row = {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "experiment_id": info.experiment_id,
        "status": str(info.status),
        "artifact_uri": info.artifact_uri,
        "start_time": np.datetime64(info.start_time, "ms"),
        "end_time": np.datetime64(info.end_time or "NaT", "ms"),
    }
    row |= {f"metrics.{k}": np.float64(data.metrics.get(k, math.nan)) for k in keys["metrics"]}
    row |= {f"params.{k}": data.params.get(k) for k in keys["params"]}
    row |= {f"tags.{k}": data.tags.get(k) for k in keys["tags"]}
    return {name: repr(value) for name, value in row.items()}


async def test_a_table_holds_every_run_a_search_finds_in_its_order(
    tracking, experiment_id, runs, monkeypatch
) -> None:
    """Read in pages of two, the table holds every run's attributes, metrics (NaN where
    missing), params and tags (None where missing), a row per run in the search's order
    and each kind's keys sorted."""
    monkeypatch.setattr(run_tables, "PAGE_SIZE", 2)
    order = ["metrics.loss DESC"]
    table = await tracking.search_runs_table(experiment_id, order_by=order)

    found = await tracking.search_runs(experiment_id, order_by=order)
    assert [r.info.run_id for r in found] != runs  # the order is the search's, not creation's
    keys = {"metrics": ["acc", "loss"], "params": ["lr", "model"], "tags": ["team"]}
    assert _rows(table) == [_expected(run, keys) for run in found]
    assert list(table)[:7] == list(RunTable().table())
    assert table["end_time"].dtype == np.dtype("datetime64[ms]")
    assert np.isnat(table["end_time"]).tolist() == [r.info.end_time is None for r in found]


async def test_max_results_cuts_the_table(tracking, experiment_id, runs, monkeypatch) -> None:
    monkeypatch.setattr(run_tables, "PAGE_SIZE", 2)
    table = await tracking.search_runs_table(experiment_id, max_results=3)

    newest = await tracking.search_runs(experiment_id, max_results=3)
    assert table["run_id"].tolist() == [r.info.run_id for r in newest]
    assert set(table) >= {"params.model", "tags.team"}
    with pytest.raises(ValueError, match="max_results"):
        await tracking.search_runs_table(experiment_id, max_results=0)


async def test_a_table_takes_the_experiment_ids_search_runs_takes(
    tracking, experiment_id, runs
) -> None:
    """One id alone as a number, as search_runs and MLflow take it, raised TypeError."""
    as_number = await tracking.search_runs_table(int(experiment_id))
    for ids in ([experiment_id], [int(experiment_id)], np.int64(experiment_id)):
        table = await tracking.search_runs_table(ids)
        assert table["run_id"].tolist() == as_number["run_id"].tolist()
    assert sorted(as_number["run_id"].tolist()) == sorted(runs)


async def test_a_table_takes_one_order_key_as_a_string_as_search_runs_does(
    tracking, experiment_id, runs
) -> None:
    """A string was taken for a list of its characters: "metrics.loss DESC" was refused as
    over 10 terms, "start_time" as an order by the unknown attribute 's'."""
    for order in ("metrics.loss DESC", "start_time"):
        table = await tracking.search_runs_table(experiment_id, order_by=order)
        found = await tracking.search_runs(experiment_id, order_by=[order])
        assert table["run_id"].tolist() == [r.info.run_id for r in found]


async def test_a_page_of_run_messages_makes_the_table_a_columnar_page_makes(
    tracking, experiment_id, runs
) -> None:
    """A server that predates columns answers Run messages: the table is the same."""
    request = api.SearchRunsRequest(project=tracking.project, experiment_ids=[experiment_id])
    tables = []
    for columnar in (False, True):
        request.columnar = columnar
        table = RunTable()
        table.add(await tracking._stub.SearchRuns(request))
        tables.append(table.table())
    assert _rows(tables[0]) == _rows(tables[1])
    assert len(tables[0]["run_id"]) == 5


async def test_a_search_finding_nothing_is_a_table_of_no_rows(tracking, experiment_id) -> None:
    table = await tracking.search_runs_table(experiment_id)
    assert list(table) == list(RunTable().table())
    assert all(len(column) == 0 for column in table.values())
