"""RunTable refuses a columnar page that does not add up, and keeps nothing of it."""

import pytest

from cairn.tracking.v1 import tracking_pb2 as pb
from cairn.tracking.v1 import tracking_service_pb2 as api
from cairn.types._run_table import RunTable


def _page(**changes: object) -> api.SearchRunsResponse:
    columns = pb.RunColumns(
        run_ids=["a", "b"],
        run_names=["a", "b"],
        experiment_ids=["1", "1"],
        statuses=[1, 1],
        artifact_uris=["", ""],
        start_times_ms=[1, 2],
        end_times_ms=[0, 3],
        lifecycle_stages=[1, 1],
        parent_run_ids=["", ""],
        metric_counts=[1, 0],
        metrics=pb.MetricColumns(keys=["acc"], key_indexes=[0], values=[0.5]),
        param_counts=[0, 1],
        params=pb.KeyValueColumns(keys=["lr"], key_indexes=[0], values=["0.1"]),
        tag_counts=[0, 0],
    )
    for name, value in changes.items():
        columns.ClearField(name)
        field = getattr(columns, name)
        if isinstance(value, list):
            field.extend(value)
        else:
            field.CopyFrom(value)
    return api.SearchRunsResponse(columns=columns)


def test_a_page_that_adds_up_is_a_row_per_run() -> None:
    table = RunTable()
    table.add(_page())
    columns = table.table()
    assert columns["run_id"].tolist() == ["a", "b"]
    assert columns["params.lr"].tolist() == [None, "0.1"]
    assert columns["status"].tolist() == ["RUNNING", "RUNNING"]


@pytest.mark.parametrize(
    "changes",
    [
        {"metric_counts": [1, 1]},  # counts two metrics, holds one
        {"param_counts": [1]},  # a count for one run of two
        {"params": pb.KeyValueColumns(keys=["lr"], key_indexes=[1], values=["0.1"])},
        {"tags": pb.KeyValueColumns(keys=["t"], key_indexes=[0], values=["x"])},  # uncounted
        {"run_names": ["a"]},  # an attribute list shorter than the page
    ],
)
def test_a_page_that_does_not_add_up_is_refused_whole(changes: dict[str, object]) -> None:
    table = RunTable()
    table.add(_page())
    with pytest.raises(ValueError, match="columnar page"):
        table.add(_page(**changes))
    assert len(table) == 2
    assert table.table()["run_id"].tolist() == ["a", "b"]


def test_a_refused_page_leaves_no_column_of_its_keys() -> None:
    """Its metrics add up, its params do not: no column for its new metric."""
    table = RunTable()
    page = _page(
        metrics=pb.MetricColumns(keys=["new"], key_indexes=[0], values=[1.0]),
        param_counts=[2, 0],
    )
    with pytest.raises(ValueError, match="params"):
        table.add(page)
    assert len(table) == 0 and "metrics.new" not in table.table()
