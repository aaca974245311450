"""A columnar SearchRuns page that does not add up is refused whole by both of the
client's readers (runs_from_search and RunTable), never read with values paired to
the wrong runs."""

from collections.abc import Callable
from typing import Any

import pytest

from cairn.exceptions import UnknownError
from cairn.tracking.v1 import tracking_pb2 as pb
from cairn.tracking.v1 import tracking_service_pb2 as api
from cairn.types._run_table import RunTable
from cairn.types._tracking import runs_from_search


def _page(**changes: object) -> api.SearchRunsResponse:
    """Two runs: the first with a metric, the second with a param and an input."""
    fields: dict[str, Any] = {
        "run_ids": ["a", "b"],
        "experiment_ids": ["1", "1"],
        "run_names": ["first", "second"],
        "user_ids": ["", ""],
        "statuses": [1, 1],
        "start_times_ms": [1, 2],
        "end_times_ms": [0, 3],
        "artifact_uris": ["", ""],
        "lifecycle_stages": [1, 1],
        "parent_run_ids": ["", ""],
        "metric_counts": [1, 0],
        "metrics": pb.MetricColumns(
            keys=["acc"], key_indexes=[0], values=[0.5], steps=[0], timestamps_ms=[0]
        ),
        "param_counts": [0, 1],
        "params": pb.KeyValueColumns(keys=["lr"], key_indexes=[0], values=["0.1"]),
        "tag_counts": [0, 0],
        "input_counts": [0, 1],
        "inputs": [pb.RunInput(uri="s3://b/x")],
    }
    return api.SearchRunsResponse(columns=pb.RunColumns(**(fields | changes)))


def _with_runs_from_search(reply: api.SearchRunsResponse) -> list[Any]:
    return [(r.info.run_id, r.data.metrics, r.data.params) for r in runs_from_search(reply)]


def _with_run_table(reply: api.SearchRunsResponse) -> list[Any]:
    table = RunTable()
    table.add(reply)
    columns = table.table()
    return [columns["run_id"].tolist(), columns["params.lr"].tolist()]


READERS: list[Callable[[api.SearchRunsResponse], list[Any]]] = [
    _with_runs_from_search,
    _with_run_table,
]


@pytest.mark.parametrize("read", READERS)
def test_a_page_that_adds_up_is_read(read: Callable[..., list[Any]]) -> None:
    assert read(_page()) in (
        [("a", {"acc": 0.5}, {}), ("b", {}, {"lr": "0.1"})],
        [["a", "b"], [None, "0.1"]],
    )


MALFORMED = {
    "an attribute list short of a run": {"run_names": ["first"]},
    "counts for one run of two": {"param_counts": [1]},
    "counts beyond the entries": {"metric_counts": [1, 1]},
    "metric lists of different lengths": {
        "metrics": pb.MetricColumns(
            keys=["acc"], key_indexes=[0], values=[0.5, 0.9], steps=[0], timestamps_ms=[0]
        )
    },
    "a key position past the keys": {
        "params": pb.KeyValueColumns(keys=["lr"], key_indexes=[1], values=["0.1"])
    },
    "entries no count counts": {
        "tags": pb.KeyValueColumns(keys=["t"], key_indexes=[0], values=["x"])
    },
    "inputs no count counts": {"input_counts": [0, 0]},
}


@pytest.mark.parametrize("read", READERS)
@pytest.mark.parametrize("changes", MALFORMED.values(), ids=list(MALFORMED))
def test_a_page_that_does_not_add_up_is_refused(
    read: Callable[..., list[Any]], changes: dict[str, object]
) -> None:
    with pytest.raises(ValueError, match="columnar page"):
        read(_page(**changes))


@pytest.mark.parametrize("read", READERS)
def test_a_status_this_client_does_not_know_is_unknown(
    read: Callable[..., list[Any]],
) -> None:
    """A newer server's status: UNKNOWN_VALUE, as a Run message's is (a ValueError
    before, which no CairnError handler caught)."""
    with pytest.raises(UnknownError) as raised:
        read(_page(statuses=[1, 99]))
    assert raised.value.reason == "UNKNOWN_VALUE"


def test_a_refused_page_adds_nothing_to_a_table() -> None:
    """Its metrics add up, its params do not: no row, and no column for its new metric."""
    table = RunTable()
    table.add(_page())
    page = _page(
        metrics=pb.MetricColumns(
            keys=["new"], key_indexes=[0], values=[1.0], steps=[0], timestamps_ms=[0]
        ),
        param_counts=[2, 0],
    )
    with pytest.raises(ValueError, match="param"):
        table.add(page)
    assert len(table) == 2
    assert table.table()["run_id"].tolist() == ["a", "b"]
    assert "metrics.new" not in table.table()
